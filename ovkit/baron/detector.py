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
        extra_test_classes: class names scored at test time and never reported (their
            embeddings built like the vocabulary's, set as the bbox head's
            ``extra_test_embeddings``): BARON's OV-COCO reference classifies the 80 COCO classes
            + background and evaluates 65, so the 15 others take probability mass.
        det_branch, kd_branch: names of the two batches when the data preprocessor is mmdet's
            ``MultiBranchDataPreprocessor`` (pipelines ending in ``MultiBranch``, a
            ``MultiSourceSampler``): detection losses on ``det_branch``; the bag losses on
            ``kd_branch``, whose proposals come from a no-grad RPN pass (BARON's reference
            draws its own KD images, empty ones included). With a plain data preprocessor
            the bag losses use the detection images.
    """

    def __init__(self, *args, clip_cfg=None, save_clip=False, vocabulary=None,
                 prompt_templates='prompt_templates.txt', roi_head=None,
                 extra_test_classes=None, det_branch='det_batch', kd_branch='kd_batch',
                 **kwargs):
        if clip_cfg is None:
            raise ValueError("Baron needs clip_cfg=dict(model_name='ViT-B-32', "
                             "checkpoint='checkpoints/clip/ViT-B-32.pt') (see README).")
        clip = build_clip(clip_cfg, cfg_key='model.clip_cfg')
        if vocabulary is not None:
            roi_head = self._vocabulary_head_cfg(clip, roi_head, vocabulary, prompt_templates)
        elif extra_test_classes:
            roi_head = self._extra_classes_head_cfg(clip, roi_head, extra_test_classes,
                                                    prompt_templates)
        super().__init__(*args, roi_head=roi_head, **kwargs)
        self.det_branch, self.kd_branch = det_branch, kd_branch
        self.__dict__['clip'] = clip
        self.save_clip = save_clip
        self.roi_head.set_clip(clip)
        if save_clip:
            self._register_state_dict_hook(Baron._add_clip_state)
            self._register_load_state_dict_pre_hook(self._load_clip_state, with_module=False)

    @staticmethod
    def _vocabulary_head_cfg(clip, roi_head, vocabulary, prompt_templates):
        """The RoI head config with class embeddings built from ``vocabulary`` in place of the
        ``cls_embeddings_path`` file (which then need not exist)."""
        names = load_class_names(vocabulary) if isinstance(vocabulary, str) else list(vocabulary)
        bbox = dict(roi_head['bbox_head'])
        layer = 12 if bbox.get('use_attn12_output') else bbox.get('text_layer')
        if len(names) != bbox.get('num_classes') and not bbox.get('reg_class_agnostic'):
            raise ValueError(
                f'model.vocabulary has {len(names)} classes but the bbox head regresses per '
                f"class for num_classes={bbox.get('num_classes')}; a new vocabulary needs "
                'reg_class_agnostic=True (as configs/baron/*.py have).')
        with torch.no_grad():
            emb = build_class_embeddings(clip, names, load_prompt_templates(prompt_templates),
                                         layer=layer)
        # Training-only options sized for the old class list do not apply to the new one.
        bbox.update(cls_embeddings_path=emb, num_classes=len(names), novel_class_ids=None,
                    class_weight=None, extra_test_embeddings=None)
        head = dict(roi_head, bbox_head=bbox)
        if 'mask_head' in head:
            head['mask_head'] = dict(head['mask_head'], num_classes=len(names))
        print_log(f'Baron: classifying {len(names)} classes from the vocabulary '
                  f'({", ".join(names[:5])}{", ..." if len(names) > 5 else ""})', 'current')
        return head

    @staticmethod
    def _extra_classes_head_cfg(clip, roi_head, names, prompt_templates):
        """The RoI head config with ``extra_test_embeddings`` built from class names."""
        names = load_class_names(names) if isinstance(names, str) else list(names)
        bbox = dict(roi_head['bbox_head'])
        layer = 12 if bbox.get('use_attn12_output') else bbox.get('text_layer')
        with torch.no_grad():
            emb = build_class_embeddings(clip, names, load_prompt_templates(prompt_templates),
                                         layer=layer)
        bbox.update(extra_test_embeddings=emb)
        return dict(roi_head, bbox_head=bbox)

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

    def _normalisation(self):
        """The detector's mean/std (the bag teacher re-normalises images to CLIP's)."""
        pre = self.data_preprocessor
        pre = getattr(pre, 'data_preprocessor', pre)  # MultiBranchDataPreprocessor wraps one
        if not getattr(pre, '_enable_normalize', False):
            raise ValueError('Baron with kd needs model.data_preprocessor mean/std: the bag '
                             "teacher re-normalises images to CLIP's statistics from them.")
        return pre.mean.view(-1), pre.std.view(-1)

    def loss(self, batch_inputs, batch_data_samples):
        """Detection losses, plus the bag losses when the RoI head has ``kd``.

        ``batch_inputs`` is a tensor (one batch: the bag losses use its images) or, from
        ``MultiBranchDataPreprocessor``, a dict of batches by branch name (``det_branch`` for
        detection, ``kd_branch`` for the bag losses; either may be missing).
        """
        if isinstance(batch_inputs, dict):
            return self._multi_branch_loss(batch_inputs, batch_data_samples)
        if self.roi_head.kd is None:
            return super().loss(batch_inputs, batch_data_samples)
        mean, std = self._normalisation()
        with self.roi_head.kd_inputs(batch_inputs, mean, std):
            return super().loss(batch_inputs, batch_data_samples)

    def _multi_branch_loss(self, batch_inputs, batch_data_samples):
        unknown = sorted(set(batch_inputs) - {self.det_branch, self.kd_branch})
        if unknown:
            raise ValueError(f'Baron got batches {sorted(batch_inputs)}; it knows '
                             f"det_branch='{self.det_branch}' and kd_branch='{self.kd_branch}'. "
                             'Name the MultiBranch pipelines accordingly (or set '
                             'model.det_branch / model.kd_branch).')
        losses = {}
        if batch_inputs.get(self.det_branch) is not None:
            losses.update(super().loss(batch_inputs[self.det_branch],
                                       batch_data_samples[self.det_branch]))
        kd_inputs = batch_inputs.get(self.kd_branch)
        if kd_inputs is not None:
            if self.roi_head.kd is None:
                raise ValueError(f"the data holds a '{self.kd_branch}' batch but "
                                 'model.roi_head.kd is None; configure BaronKD or drop the '
                                 'KD dataset from train_dataloader.')
            losses.update(self.kd_loss(kd_inputs, batch_data_samples[self.kd_branch]))
        return losses

    def kd_loss(self, batch_inputs, batch_data_samples):
        """Bag losses on a KD batch: backbone + neck with gradients, proposals from a no-grad
        RPN pass (the training proposal config, ``train_cfg.rpn_proposal``)."""
        mean, std = self._normalisation()
        x = self.extract_feat(batch_inputs)
        metas = [s.metainfo for s in batch_data_samples]
        proposal_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn)
        with torch.no_grad():
            rpn_results = self.rpn_head.predict_by_feat(
                *self.rpn_head(x), batch_img_metas=metas, cfg=proposal_cfg, rescale=False)
        return self.roi_head.kd_loss(x, rpn_results, batch_data_samples, batch_inputs,
                                     mean, std)
