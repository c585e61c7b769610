"""BoxesCache: frames, merge rule, start iteration, capacity, sync across processes."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torchvision.ops import box_iou

from ovkit.baron import BoxesCache
from ovkit.baron.boxes_cache import _to_original_frame, _to_visit_frame


def meta(img_id, scale=(1.0, 1.0), flip=False, shape=(100, 200)):
    return dict(img_id=img_id, scale_factor=scale, flip=flip,
                flip_direction='horizontal' if flip else None, img_shape=shape)


def test_frames_follow_mmdet_resize_and_flip():
    from mmdet.structures.bbox import bbox_flip
    boxes = torch.tensor([[10., 20., 50., 60., 0.9], [0., 0., 30., 10., 0.95]])
    m = meta(1, scale=(2.0, 1.5), flip=True, shape=(150, 400))
    here = _to_visit_frame(boxes, m)
    expected = bbox_flip(boxes[:, :4] * torch.tensor([2.0, 1.5, 2.0, 1.5]), (150, 400),
                         'horizontal')
    torch.testing.assert_close(here[:, :4], expected)
    torch.testing.assert_close(here[:, 4], boxes[:, 4])
    torch.testing.assert_close(_to_original_frame(here, m), boxes)  # round trip
    # x1 < x2 after the flip: 400 - 2 * 50 = 300 .. 400 - 2 * 10 = 380
    assert here[0, :4].tolist() == pytest.approx([300., 30., 380., 90.])


def _nms_by_hand(boxes, thr):
    order = boxes[:, 4].argsort(descending=True)
    kept = []
    for i in order.tolist():
        if all(box_iou(boxes[i:i + 1, :4], boxes[j:j + 1, :4]).item() <= thr for j in kept):
            kept.append(i)
    return boxes[kept]


def test_merge_keeps_confident_boxes_of_earlier_visits():
    cache = BoxesCache(start_iter=2, num_boxes=3, nms_thr=0.1, score_thr=0.85)
    first = torch.tensor([[0., 0., 10., 10., 0.95], [50., 50., 70., 70., 0.9],
                          [1., 1., 11., 11., 0.99], [80., 0., 90., 10., 0.5]])
    # before start_iter: untouched, nothing stored
    out = cache.merge([first], [meta(7)], iteration=1)
    assert out[0] is first and len(cache) == 0
    out = cache.merge([first], [meta(7)], iteration=2)
    expected = _nms_by_hand(first[first[:, 4] > 0.85], 0.1)
    torch.testing.assert_close(out[0], expected)  # score filter, then NMS, best first
    torch.testing.assert_close(cache.boxes[7], expected)
    # second visit, resized x2 and flipped: the cached boxes come back in this frame and
    # compete with the new ones; the new store is in the original frame again
    m = meta(7, scale=(2.0, 2.0), flip=True, shape=(200, 400))
    second = torch.tensor([[200., 100., 240., 140., 0.97], [20., 20., 40., 40., 0.3]])
    out = cache.merge([second], [m], iteration=3)
    merged = torch.cat([_to_visit_frame(expected, m), second])
    torch.testing.assert_close(out[0], _nms_by_hand(merged[merged[:, 4] > 0.85], 0.1))
    stored = torch.cat([expected, _to_original_frame(second, m)])
    stored = _nms_by_hand(stored[stored[:, 4] > 0.85], 0.1)[:3]  # num_boxes=3
    torch.testing.assert_close(cache.boxes[7], stored)
    assert cache.boxes[7].shape[0] == 3 and out[0].shape[0] == 3
    # nothing passes the score: the best box alone; images without id pass through
    weak = torch.tensor([[0., 0., 5., 5., 0.2], [10., 10., 15., 15., 0.3]])
    out = cache.merge([weak, weak], [meta(8), dict(img_shape=(100, 200))], iteration=3)
    torch.testing.assert_close(out[0], weak[1:])
    assert out[1] is weak and set(cache.boxes) == {7, 8}
    with pytest.raises(ValueError, match='xyxy'):
        cache.merge([weak[:, :4]], [meta(9)], iteration=3)
    with pytest.raises(ValueError, match='start_iter'):
        BoxesCache(start_iter=-1)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, port, queue):
    import torch.distributed as tdist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    tdist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        cache = BoxesCache(start_iter=0)
        boxes = torch.tensor([[10. * rank, 0., 10. * rank + 5, 5., 0.875]])
        cache.merge([boxes], [meta(100 + rank)], iteration=0)
        queue.put((rank, {k: v.tolist() for k, v in cache.boxes.items()}))
    finally:
        tdist.destroy_process_group()


def test_updates_are_shared_between_processes():
    ctx = mp.get_context('fork')  # no re-import: seconds, not a minute
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    # each process stored both images: its own visit and the other process's
    for rank in (0, 1):
        assert results[rank] == {100: [[0., 0., 5., 5., 0.875]],
                                 101: [[10., 0., 15., 5., 0.875]]}


def test_a_cache_threshold_above_the_sampler_threshold_is_reported(monkeypatch):
    """From start_iter on the cache keeps only boxes above its score_thr (and ground truth):
    above the sampler's objectness_thr that silently ends proposal-centred bags."""
    import mmengine.logging

    from ovkit.baron import BaronKD
    said = []
    monkeypatch.setattr(mmengine.logging, 'print_log', lambda msg, **kw: said.append(msg))
    BaronKD(num_words=2, word_dim=8, embed_dim=8, sampler=dict(objectness_thr=0.1),
            boxes_cache=dict(start_iter=300, score_thr=0.85))
    assert len(said) == 1 and 'boxes_cache.score_thr=0.85' in said[0] \
        and 'sampler.objectness_thr=0.1' in said[0] and 'iteration 300' in said[0]
    for cache in (dict(score_thr=0.1), None):  # consistent, or no cache: nothing to say
        BaronKD(num_words=2, word_dim=8, embed_dim=8, sampler=dict(objectness_thr=0.1),
                boxes_cache=cache)
    assert len(said) == 1
