"""Strict PyAV video reading: sampled frames only, and an error naming the file otherwise.

mmaction2's ``PyAVInit``/``PyAVDecode`` are the model, with two differences that matter for a
long fine-tuning run: ``PyAVDecode`` silently wraps the indices around when a video decodes to
fewer frames than its header claims (a truncated file trains on junk), and it converts every
decoded frame to RGB although only the sampled ones are used. Here a short or undecodable
video raises an error naming the file (the dataset counts it and draws another sample), and
only the sampled frames are converted. Streams that do not state their frame count are
counted by demuxing, so the sampler still sees the true length.
"""
import io

import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform
from mmengine.fileio import get

__all__ = ['PyAVOpen', 'PyAVDecodeSampled']


def _import_av():
    try:
        import av
    except ImportError as err:
        raise ImportError('PyAV is needed to read videos: pip install av') from err
    return av


@TRANSFORMS.register_module()
class PyAVOpen(BaseTransform):
    """Open a video with PyAV; set ``video_reader`` and ``total_frames``.

    Args:
        backend_args: mmengine file backend arguments (None reads local files).
    """

    def __init__(self, backend_args=None):
        self.backend_args = backend_args

    def transform(self, results):
        av = _import_av()
        name = results['filename']
        try:
            data = get(name, backend_args=self.backend_args)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{name}: video file not found') from err
        try:
            container = av.open(io.BytesIO(data))
            stream = container.streams.video[0]
        except (av.FFmpegError, IndexError, ValueError) as err:
            raise ValueError(f'{name}: not a readable video ({err})') from err
        total = stream.frames
        if total <= 0:  # the container does not say: count the packets
            total = sum(1 for p in container.demux(stream) if p.size)
            container.seek(0)
        results['video_reader'] = container
        results['total_frames'] = int(total)
        return results

    def __repr__(self):
        return f'{self.__class__.__name__}(backend_args={self.backend_args!r})'


@TRANSFORMS.register_module()
class PyAVDecodeSampled(BaseTransform):
    """Decode up to the last sampled index and keep only ``frame_inds`` (RGB, HxWx3).

    Raises ``ValueError`` naming the file when the video decodes to fewer frames than the
    sampled indices need, or fails to decode at all.

    Args:
        multi_thread: let FFmpeg decode with several threads.
    """

    def __init__(self, multi_thread=False):
        self.multi_thread = multi_thread

    def transform(self, results):
        av = _import_av()
        container = results['video_reader']
        name = results.get('filename', 'video')
        inds = np.asarray(results['frame_inds']).reshape(-1)
        wanted = set(int(i) for i in inds)
        last = max(wanted)
        stream = container.streams.video[0]
        if self.multi_thread:
            stream.thread_type = 'AUTO'
        frames = {}
        count = 0
        try:
            for count, frame in enumerate(container.decode(stream), 1):
                i = count - 1
                if i in wanted:
                    frames[i] = frame.to_ndarray(format='rgb24')
                if i >= last:
                    break
        except av.FFmpegError as err:
            raise ValueError(f'{name}: decoding failed after {count} frames ({err})') from err
        finally:
            container.close()
            results['video_reader'] = None
        if last not in frames:
            raise ValueError(f'{name}: decoded {count} frames but frame {last} was sampled '
                             f'(the header says {results.get("total_frames")}); '
                             'the file is truncated or shorter than needed.')
        results['imgs'] = [frames[int(i)] for i in inds]
        results['original_shape'] = results['imgs'][0].shape[:2]
        results['img_shape'] = results['imgs'][0].shape[:2]
        return results

    def __repr__(self):
        return f'{self.__class__.__name__}(multi_thread={self.multi_thread})'
