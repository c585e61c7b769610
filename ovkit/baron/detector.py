"""BARON detector: a two-stage mmdet detector that owns a frozen CLIP model."""
import os.path as osp

import torch
from mmdet.models.detectors import TwoStageDetector
from mmdet.registry import MODELS
from mmengine.logging import print_log

from ovkit.clip import build_class_embeddings, build_clip, load_class_names, load_prompt_templates


@MODELS.register_module()
class Baron(TwoStageDetector):
    """Two-stage detector for BARON (Faster R-CNN / Mask R-CNN layouts).

    Args (beyond TwoStageDetector's):
        clip_cfg: :func:`ovkit.clip.build_clip` config (``model_name``, local ``checkpoint``).
            CLIP is frozen and kept outside the module tree: it has no entry in
            ``parameters()`` (so no optimizer sees it), is moved by ``.to()``/``.cuda()``, and
            is left out of checkpoints unless ``save_clip=True``.
        save_clip: write CLIP's weights into checkpoints (under ``clip.``) and read them back.
        vocabulary: class names (a list, or a text file with one name per line) to classify
            with instead of ``cls_embeddings_path``: embeddings are built on the fly from
            ``prompt_templates`` with the bbox head's text layer. Open-vocabulary testing.
        prompt_templates: text file of prompt templates ('a photo of a {}.' per line).
    """

    def __init__(self, *args, clip_cfg=None, save_clip=False, vocabulary=None,
                 prompt_templates='data/metadata/prompt_templates.txt', **kwargs):
        super().__init__(*args, **kwargs)
        if clip_cfg is None:
            raise ValueError("Baron needs clip_cfg=dict(model_name='ViT-B-32', "
                             "checkpoint='checkpoints/clip/ViT-B-32.pt') (see README).")
        clip = build_clip(clip_cfg, cfg_key='model.clip_cfg')
        self.__dict__['clip'] = clip
        self.save_clip = save_clip
        if vocabulary is not None:
            self._set_vocabulary(vocabulary, prompt_templates)
        self.roi_head.set_clip(clip)
        if save_clip:
            self._register_state_dict_hook(Baron._add_clip_state)
            self._register_load_state_dict_pre_hook(self._load_clip_state, with_module=False)

    def _set_vocabulary(self, vocabulary, prompt_templates):
        names = load_class_names(vocabulary) if isinstance(vocabulary, str) else list(vocabulary)
        templates = load_prompt_templates(prompt_templates)
        head = self.roi_head.bbox_head
        with torch.no_grad():
            emb = build_class_embeddings(self.clip, names, templates, layer=head.text_layer)
        head.set_class_embeddings(emb)
        print_log(f'Baron: classifying {len(names)} classes from the vocabulary '
                  f'({", ".join(names[:5])}{", ..." if len(names) > 5 else ""})', 'current')

    def init_weights(self):
        # mmengine reports a missing Pretrained file deep inside its loader; name the key here.
        for part in ('backbone', 'neck', 'rpn_head', 'roi_head'):
            module = getattr(self, part, None)
            cfgs = getattr(module, 'init_cfg', None) if module is not None else None
            for cfg in cfgs if isinstance(cfgs, list) else [cfgs]:
                path = cfg.get('checkpoint') if isinstance(cfg, dict) else None
                if (cfg and cfg.get('type') == 'Pretrained' and isinstance(path, str)
                        and '://' not in path and not osp.isfile(path)):
                    raise FileNotFoundError(
                        f"model.{part}.init_cfg.checkpoint='{path}' not found (absolute: "
                        f'{osp.abspath(path)}). Download the pretrained weights named in the '
                        'config header (README, "BARON"), or set init_cfg=None to start from '
                        'scratch.')
        super().init_weights()

    def _apply(self, fn, *args, **kwargs):
        # CLIP is not a submodule; keep it on the detector's device and dtype.
        super()._apply(fn, *args, **kwargs)
        self.clip._apply(fn, *args, **kwargs)
        return self

    @staticmethod
    def _add_clip_state(module, state_dict, prefix, local_metadata):
        for key, value in module.clip.state_dict().items():
            state_dict[f'{prefix}clip.{key}'] = value.detach()
        return state_dict

    def _load_clip_state(self, state_dict, prefix, *args):
        clip_keys = [k for k in state_dict if k.startswith(f'{prefix}clip.')]
        if clip_keys:
            n = len(prefix) + len('clip.')
            self.clip.load_state_dict({k[n:]: state_dict.pop(k) for k in clip_keys})

    def loss(self, batch_inputs, batch_data_samples):
        pre = self.data_preprocessor
        with self.roi_head.kd_inputs(batch_inputs, pre.mean.view(-1), pre.std.view(-1)):
            return super().loss(batch_inputs, batch_data_samples)
