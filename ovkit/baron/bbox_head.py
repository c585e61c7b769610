"""BARON's box head: regions are classified by reading them as CLIP "pseudo words".

The classification branch does not predict class scores directly. It projects each region
feature to ``num_words`` pseudo words in CLIP's word-embedding space, CLIP's frozen text encoder
turns them into a region embedding, and the logits are ``temperature x cosine`` with fixed class
embeddings (from class names and prompts, see ``tools/data/gen_class_embeddings.py``) plus a
background embedding as the last class. New vocabularies therefore need only new class embeddings.

The CLIP model is *not* a submodule: the detector owns it (frozen, outside the optimizer and the
checkpoint) and hands it over with :meth:`BaronBBoxHead.set_clip` before the first forward, so
mmdet's ``StandardRoIHead`` can call ``bbox_head(x)`` unchanged. Everything else (targets, losses,
box decoding, NMS) is mmdet's ``BBoxHead`` machinery; only what BARON changes is overridden.
"""
import logging
import os.path as osp
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads.bbox_heads import BBoxHead, ConvFCBBoxHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import get_box_tensor, scale_boxes
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ovkit.engine.guards import check_finite

__all__ = ['BaronBBoxHead', 'BaronConvFCBBoxHead', 'BaronShared2FCBBoxHead',
           'BaronShared4Conv1FCBBoxHead']

# Logit for classes excluded from the training softmax (class weight 0): exp() underflows to 0
# in fp32, so they get no probability mass and no gradient, yet stays finite (no 0 * inf = nan).
_EXCLUDED_LOGIT = -1e4


def first_existing(paths, key: str = 'cls_embeddings_path') -> str:
    """The first existing file of a list of candidates (logged), e.g. DetPro's embeddings with
    hand-crafted ones as the fallback; a clear error when none exists."""
    for path in paths:
        if isinstance(path, str) and osp.isfile(path):
            if path != paths[0]:
                print_log(f"{key}: '{paths[0]}' not found, using '{path}'", logger='current')
            return path
    raise FileNotFoundError(
        f'{key}={list(paths)}: none of these files exists. Generate the hand-crafted one with '
        '`python tools/data/gen_class_embeddings.py --classes <class names file> --out <path>` '
        '(docs/baron.md), or give the path of the file you have.')


def load_cls_embeddings(path, num_classes: Optional[int],
                        key: str = 'cls_embeddings_path') -> Tensor:
    """Class embeddings [num_classes, D] from ``cls_embeddings_path``, rows L2-normalised.

    ``path`` may also be the embeddings themselves (a tensor or array), as the Baron detector
    passes them when it builds a vocabulary from class names. ``num_classes=None`` accepts any
    row count; ``key`` names the config key in errors.
    """
    hint = ('Generate it with `python tools/data/gen_class_embeddings.py --classes '
            '<class names file> --out <path> [--layer 12 for use_attn12_output]` using the same '
            'class list (and order) as the dataset.')
    if isinstance(path, (list, tuple)):
        path = first_existing(path, key)
    if isinstance(path, (Tensor, np.ndarray)):
        array = path.detach().cpu().float().numpy() if isinstance(path, Tensor) else path
        path = '<embeddings given in memory>'
    elif not path or not osp.isfile(str(path)):
        raise FileNotFoundError(f"{key}='{path}' not found. {hint}")
    else:
        try:
            array = np.load(path)
        except Exception as err:  # a corrupt or non-npy file
            raise ValueError(f"{key}='{path}' is not a readable .npy file ({err}). "
                             f'{hint}') from err
    if array.ndim != 2:
        raise ValueError(f"{key}='{path}' must hold a [num_classes, D] array, got "
                         f'shape {array.shape}. {hint}')
    if num_classes is not None and array.shape[0] != num_classes:
        raise ValueError(f"{key}='{path}' has {array.shape[0]} rows but "
                         f'num_classes={num_classes}; one row per class is required. {hint}')
    check_finite(array, f"cls_embeddings_path='{path}'", hint)
    return F.normalize(torch.from_numpy(np.asarray(array, dtype=np.float32)), dim=-1)


def load_class_weight_file(path: str, num_classes: int) -> Tensor:
    """Weights [num_classes]: 1 for the classes seen in training, 0 for the others.

    ``path`` is a json: either a category-info list (``[{'id', 'image_count', ...}]``, the
    reference's ``lvis_v1_train_cat_norare_info.json``; weight = image_count > 0) or an
    annotation file with ``categories`` and ``annotations`` (weight = has annotations).
    Categories are ordered by id, as mmdet's LVIS/COCO datasets label them.
    """
    import json
    hint = ('Use the category-info json of the training annotations (the no-rare LVIS file: '
            'tools/data/make_ov_splits.py lvis writes it) or a list of weights.')
    if not osp.isfile(path):
        raise FileNotFoundError(f"class_weight='{path}' not found (absolute: "
                                f'{osp.abspath(path)}). {hint}')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"class_weight='{path}' is not a readable json file ({err}). "
                         f'{hint}') from err
    if isinstance(data, dict) and isinstance(data.get('categories'), list) \
            and isinstance(data.get('annotations'), list):
        seen = {a.get('category_id') for a in data['annotations']}
        cats = [dict(c, image_count=int(c.get('id') in seen)) for c in data['categories']]
    elif isinstance(data, list):
        cats = data
    else:
        raise ValueError(f"class_weight='{path}' holds neither a category-info list nor an "
                         f"annotation file with 'categories' and 'annotations'. {hint}")
    try:
        counts = [c['image_count'] for c in sorted(cats, key=lambda c: c['id'])]
    except (KeyError, TypeError) as err:
        raise ValueError(f"class_weight='{path}': every category needs 'id' and 'image_count' "
                         f'({err!r} missing). {hint}') from None
    if len(counts) != num_classes:
        raise ValueError(f"class_weight='{path}' lists {len(counts)} categories but "
                         f'num_classes={num_classes}. {hint}')
    return (torch.tensor(counts, dtype=torch.float32) > 0).float()


@MODELS.register_module()
class BaronBBoxHead(BBoxHead):
    """mmdet ``BBoxHead`` whose classifier is CLIP's text encoder on region pseudo words.

    Args (BARON-specific; the rest are ``BBoxHead``'s):
        num_words, word_dim: pseudo words per region and their width (= CLIP ``text_width``).
        cls_embeddings_path: ``.npy`` [num_classes, D]; D must match the text output used. A
            list of paths: the first existing one (e.g. DetPro's embeddings, then hand-crafted).
        bg_embedding: ``'zero'`` (fixed zero vector) or ``'learn'`` (Linear(1, D) on a constant
            1, L2-normalised); appended as the last class.
        cls_temp / test_cls_temp: logit temperature in training / evaluation (None: cls_temp).
        cls_bias: initial value of a learnable scalar logit bias; only with a sigmoid loss,
            because a shared shift does nothing to a softmax. Added in training only, like the
            reference implementation, so its published score thresholds apply.
        words_drop_ratio: probability of dropping each pseudo word in training (>= 1 word kept).
        use_attn12_output / text_layer: read the text encoder's output after ``text_layer``
            blocks (no final LayerNorm/projection) instead of the projected output;
            ``use_attn12_output=True`` means ``text_layer=12`` (ViT-B/32's last block).
        class_weight: per-class loss weights: a list (num_classes, or num_classes + 1 with the
            background last, e.g. BARON's 0.7 for OV-COCO), or a category-info json whose
            categories with ``image_count`` 0 get weight 0 (the reference's
            ``lvis_v1_train_cat_norare_info.json``; an annotation file works too: categories
            without annotations get 0); background 1 then.
        novel_class_ids: class indices whose weight is 0. Weight-0 classes are removed from the
            training softmax (no probability mass, no gradient) and their samples are ignored;
            at test time every class is scored.
        extra_test_embeddings: class embeddings [K, D] (``.npy`` path or array) scored at test
            time only and never reported: they take probability mass from the classes as the
            15 COCO classes outside OV-COCO's 65 do in the reference, which classifies 80 + 1
            and evaluates 65. Detections labelled with one of them are dropped after NMS (so,
            as there, they count towards ``max_per_img``). Training ignores them, as the
            reference's zero class weight does.
    """

    def __init__(self,
                 num_words: int = 6,
                 word_dim: int = 512,
                 cls_embeddings_path: str = '',
                 bg_embedding: str = 'zero',
                 cls_temp: float = 50.0,
                 test_cls_temp: Optional[float] = None,
                 cls_bias: Optional[float] = None,
                 words_drop_ratio: float = 0.5,
                 use_attn12_output: bool = False,
                 text_layer: Optional[int] = None,
                 class_weight: Optional[Sequence[float]] = None,
                 novel_class_ids: Optional[Sequence[int]] = None,
                 extra_test_embeddings=None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not self.with_cls:
            raise ValueError(f'{type(self).__name__} classifies through CLIP: with_cls must be '
                             'True.')
        if self.custom_cls_channels:
            raise ValueError(f'{type(self).__name__}: loss_cls={type(self.loss_cls).__name__} '
                             'changes the classifier channels, which the CLIP classifier cannot '
                             'do; use CrossEntropyLoss or FocalLoss-style losses.')
        if not 0 <= words_drop_ratio < 1:
            raise ValueError(f'words_drop_ratio={words_drop_ratio} must be in [0, 1).')
        if use_attn12_output:
            if text_layer not in (None, 12):
                raise ValueError(f'use_attn12_output=True means text_layer=12, but '
                                 f'text_layer={text_layer}; set only one of them.')
            text_layer = 12
        self.num_words = num_words
        self.word_dim = word_dim
        self.words_drop_ratio = words_drop_ratio
        self.text_layer = text_layer
        self.use_attn12_output = text_layer == 12
        self.cls_temp = cls_temp
        self.test_cls_temp = cls_temp if test_cls_temp is None else test_cls_temp
        if isinstance(cls_embeddings_path, (list, tuple)):
            cls_embeddings_path = first_existing(cls_embeddings_path)
        # a printable name: embeddings may come in memory (Baron's vocabulary), not as a file
        self.cls_embeddings_path = cls_embeddings_path if isinstance(cls_embeddings_path, str) \
            else '<embeddings given in memory>'

        # The cls predictor becomes the region -> pseudo-word projection.
        in_features = self.fc_cls.in_features
        if self.with_reg and isinstance(self.reg_predictor_cfg, (list, tuple)):
            # ConvFC heads know their reg branch width; plain BBoxHead reads the RoI features
            self.fc_reg = self._build_reg_mlp(getattr(self, 'reg_last_dim', in_features))
        cfg = self.cls_predictor_cfg.copy()
        cfg.update(in_features=in_features, out_features=num_words * word_dim)
        self.fc_cls = MODELS.build(cfg)

        if cls_bias is None:
            self.cls_bias = None
        else:
            if not getattr(self.loss_cls, 'use_sigmoid', False):
                raise ValueError(
                    f'cls_bias={cls_bias} needs a sigmoid classification loss (loss_cls with '
                    'use_sigmoid=True): softmax is unchanged by a bias shared by all classes. '
                    'Set cls_bias=None or use_sigmoid=True.')
            self.cls_bias = nn.Parameter(torch.full((1, ), float(cls_bias)))

        # Fixed by the config file, not learned: kept out of the state dict so one checkpoint
        # can be evaluated with another vocabulary (see set_class_embeddings).
        embeddings = load_cls_embeddings(cls_embeddings_path, self.num_classes)
        self.register_buffer('cls_embeddings', embeddings, persistent=False)
        self._warn_if_space_mismatch(cls_embeddings_path)
        dim = embeddings.shape[1]
        if bg_embedding == 'zero':
            self.register_buffer('bg_embedding', torch.zeros(1, dim), persistent=False)
        elif bg_embedding == 'learn':
            self.bg_embedding = nn.Linear(1, dim)
            if isinstance(self.init_cfg, list):
                self.init_cfg.append(dict(type='Xavier', distribution='uniform',
                                          override=dict(name='bg_embedding')))
        else:
            raise ValueError(f"bg_embedding='{bg_embedding}' is not supported; use 'zero' or "
                             "'learn'.")
        self.bg_embedding_type = bg_embedding

        weight = self._class_weight(class_weight, novel_class_ids)
        self.register_buffer('class_weight', weight, persistent=False)
        self.register_buffer('extra_test_embeddings', None, persistent=False)
        if extra_test_embeddings is not None:
            extra = load_cls_embeddings(extra_test_embeddings, None,
                                        key='extra_test_embeddings')
            if extra.shape[1] != dim:
                raise ValueError(f'extra_test_embeddings has D={extra.shape[1]} but the class '
                                 f'embeddings have D={dim}; both must come from the same text '
                                 'path (see tools/data/gen_class_embeddings.py).')
            if self.with_reg and not self.reg_class_agnostic:
                raise ValueError('extra_test_embeddings needs reg_class_agnostic=True: the '
                                 'extra classes have no box regressor of their own.')
            self.extra_test_embeddings = extra
        self._clip = None

    # ------------------------------------------------------------------ configuration helpers
    def _build_reg_mlp(self, in_features: int) -> nn.Module:
        """``reg_predictor_cfg`` given as a list of layers (the reference's 1024-1024-4 MLP:
        Linear, ReLU, Linear) -> an ``nn.Sequential``; the first Linear's ``in_features`` and
        the last one's ``out_features`` are filled in, as mmdet does for a single layer."""
        layers = [dict(c) for c in self.reg_predictor_cfg]
        linear = [i for i, c in enumerate(layers) if c.get('type') in ('Linear', nn.Linear)]
        if not linear:
            raise ValueError(f'reg_predictor_cfg={self.reg_predictor_cfg}: a list of layers '
                             "needs at least one dict(type='Linear', ...).")
        box_dim = self.bbox_coder.encode_size
        out_dim = box_dim if self.reg_class_agnostic else box_dim * self.num_classes
        layers[linear[0]]['in_features'] = in_features
        layers[linear[-1]]['out_features'] = out_dim
        return nn.Sequential(*[MODELS.build(c) for c in layers])


    def _warn_if_space_mismatch(self, path):
        # Layer-k ("attn12") and projected outputs are different spaces with equal widths for
        # ViT-B/32, so a swapped file cannot be caught by shape; the file name usually tells.
        # Embeddings given in memory were built for this head's text layer (Baron's vocabulary)
        # and have no name to judge by.
        if not isinstance(path, str):
            return
        name = osp.basename(path)
        if ('attn' in name) != (self.text_layer is not None):
            print_log(
                f"cls_embeddings_path='{path}' looks like "
                f"{'a layer-k (attn) file' if 'attn' in name else 'a projected-output file'} "
                f'but the head reads text_layer={self.text_layer}; class and region embeddings '
                'must come from the same text path.', logger='current', level=logging.WARNING)

    def _class_weight(self, class_weight, novel_class_ids) -> Optional[Tensor]:
        if class_weight is None and not novel_class_ids:
            return None
        num = self.num_classes
        if class_weight is None:
            weight = torch.ones(num + 1)
        elif isinstance(class_weight, str):
            weight = torch.cat([load_class_weight_file(class_weight, num), torch.ones(1)])
        else:
            weight = torch.as_tensor(list(class_weight), dtype=torch.float32)
            if weight.numel() == num:
                weight = torch.cat([weight, weight.new_ones(1)])
            if weight.dim() != 1 or weight.numel() != num + 1:
                raise ValueError(
                    f'class_weight has {weight.numel()} entries; expected num_classes={num} '
                    f'(or {num + 1} with the background last).')
            if (weight < 0).any():
                raise ValueError('class_weight entries must be >= 0.')
        for idx in novel_class_ids or ():
            if not 0 <= int(idx) < num:
                raise ValueError(f'novel_class_ids has {idx}, outside [0, {num - 1}] '
                                 f'(num_classes={num}).')
            weight[int(idx)] = 0.0
        return weight

    # ------------------------------------------------------------------ CLIP hand-over
    def set_clip(self, clip) -> None:
        """Give the head the detector's frozen ``ovkit.clip.CLIPModel`` (not registered as a
        submodule, so it stays out of this head's parameters, state dict and ``.to()``)."""
        if clip.text_width != self.word_dim:
            raise ValueError(f'word_dim={self.word_dim} must equal the CLIP text width '
                             f'{clip.text_width} (model {clip.model_name}).')
        if self.text_layer is not None and self.text_layer > clip.num_text_layers:
            raise ValueError(f'text_layer={self.text_layer} (use_attn12_output) exceeds the '
                             f'{clip.num_text_layers} text blocks of CLIP {clip.model_name}.')
        out_dim = clip.embed_dim if self.text_layer is None else clip.text_width
        if out_dim != self.cls_embeddings.shape[1]:
            raise ValueError(
                f"cls_embeddings_path='{self.cls_embeddings_path}' has D="
                f'{self.cls_embeddings.shape[1]} but CLIP {clip.model_name} gives '
                f'{out_dim}-d region embeddings for text_layer={self.text_layer}.')
        self.__dict__['_clip'] = clip

    @property
    def clip(self):
        if self._clip is None:
            raise RuntimeError(f'{type(self).__name__} has no CLIP model: the detector must call '
                               'bbox_head.set_clip(clip) (clip = ovkit.clip.build_clip(clip_cfg)) '
                               'before the first forward.')
        return self._clip

    def set_class_embeddings(self, embeddings: Tensor) -> None:
        """Swap the vocabulary, e.g. for open-vocabulary testing with new class names
        (``ovkit.clip.build_class_embeddings``). Changing the class count needs class-agnostic
        regression. ``class_weight`` (a training option, and an ensemble head's novel split)
        belonged to the old vocabulary and is dropped, also when the count stays the same."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.cls_embeddings.shape[1]:
            raise ValueError(f'class embeddings must be [num_classes, '
                             f'{self.cls_embeddings.shape[1]}], got {tuple(embeddings.shape)}.')
        num = embeddings.shape[0]
        if num != self.num_classes and self.with_reg and not self.reg_class_agnostic:
            raise ValueError(f'changing num_classes {self.num_classes} -> {num} needs '
                             'reg_class_agnostic=True (the box regressor has per-class outputs).')
        self.cls_embeddings = F.normalize(embeddings.detach().float(), dim=-1).to(
            self.cls_embeddings.device)
        self.extra_test_embeddings = None  # they belonged to the old vocabulary
        self.class_weight = None
        self.num_classes = num

    # ------------------------------------------------------------------ pieces reused by bags
    def region_words(self, x_cls: Tensor) -> Tensor:
        """Pseudo words [N, num_words, word_dim] from classification-branch features."""
        return self.fc_cls(x_cls).view(-1, self.num_words, self.word_dim)

    def rois_to_words(self, x: Tensor) -> Tensor:
        """Pseudo words from RoI features, through the shared and cls layers of this head."""
        return self._forward_branches(x)[0].view(-1, self.num_words, self.word_dim)

    def encode_words(self, words: Tensor, valid_mask: Optional[Tensor] = None) -> Tensor:
        """L2-normalised region embeddings [N, D] of pseudo words, in the class-embedding space."""
        return self.clip.encode_pseudo_text(words, valid_mask, layer=self.text_layer,
                                            normalize=True)

    def words_valid_mask(self, words: Tensor) -> Optional[Tensor]:
        """Word dropout as a keep-mask [N, num_words] (training only; None = keep all).

        Each word is dropped with ``words_drop_ratio``; a row that lost every word keeps one at
        random, so every region still says something.
        """
        if not self.training or self.words_drop_ratio <= 0 or words.shape[0] == 0:
            return None
        num, num_words = words.shape[:2]
        keep = torch.rand(num, num_words, device=words.device) >= self.words_drop_ratio
        empty = (~keep.any(dim=1)).nonzero(as_tuple=True)[0]
        if empty.numel():
            keep[empty, torch.randint(num_words, (empty.numel(), ), device=words.device)] = True
        return keep

    def class_embeddings_with_bg(self) -> Tensor:
        """[num_classes + 1, D]: class embeddings then the background embedding."""
        if self.bg_embedding_type == 'learn':
            one = self.cls_embeddings.new_ones(1, 1)
            bg = F.normalize(self.bg_embedding(one), dim=-1)
        else:
            bg = self.bg_embedding
        return torch.cat([self.cls_embeddings, bg.to(self.cls_embeddings.dtype)])

    def cls_logits(self, region_embeddings: Tensor) -> Tensor:
        """temperature x cosine(region, class) [N, num_classes + 1], computed in fp32 (a bf16
        logit of magnitude ~50 would be rounded to steps of 0.25). In evaluation with
        ``extra_test_embeddings`` [K, D]: [N, num_classes + K + 1], the extra classes before
        the background."""
        with torch.autocast(device_type=region_embeddings.device.type, enabled=False):
            region = F.normalize(region_embeddings.float(), dim=-1)
            temp = self.cls_temp if self.training else self.test_cls_temp
            classes = self.class_embeddings_with_bg().float()
            if not self.training and self.extra_test_embeddings is not None:
                extra = self.extra_test_embeddings.float().to(classes.device)
                classes = torch.cat([classes[:-1], extra, classes[-1:]])
            logits = temp * region @ classes.t()
            if self.training and self.cls_bias is not None:
                logits = logits + self.cls_bias.float()
        return logits

    # ------------------------------------------------------------------ forward
    def _forward_branches(self, x: Tensor):
        """(flat pseudo words, bbox_pred) from the parent's layer layout."""
        if not self.with_avg_pool and x.dim() > 2:
            x = x.flatten(1)
        return BBoxHead.forward(self, x)

    def forward(self, x: Tensor) -> tuple:
        """RoI features -> (cls_score [N, num_classes + 1], bbox_pred), as mmdet's heads."""
        words_flat, bbox_pred = self._forward_branches(x)
        words = words_flat.view(-1, self.num_words, self.word_dim)
        region = self.encode_words(words, self.words_valid_mask(words))
        return self.cls_logits(region), bbox_pred

    def region_cosines(self, x: Tensor) -> Tensor:
        """RoI features -> cosine of this head's region embedding with each class embedding
        (the extra test classes, then the background last), [N, columns]: the classification
        before temperature and bias. Analysis tools read this rather than ``forward``, whose
        scores an ensemble head has already turned into combined probabilities. (In training
        mode the words are dropped at ``words_drop_ratio``, as in ``forward``.)"""
        logits, _ = BaronBBoxHead.forward(self, x)  # this head's own logits, never ensembled
        if self.training and self.cls_bias is not None:
            logits = logits - self.cls_bias.float()
        return logits / (self.cls_temp if self.training else self.test_cls_temp)

    # ------------------------------------------------------------------ loss / predict
    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor,
             label_weights: Tensor, bbox_targets: Tensor, bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        """mmdet's loss, after applying ``class_weight``/``novel_class_ids``."""
        if self.class_weight is not None and cls_score is not None:
            weight = self.class_weight.to(cls_score.device)
            if cls_score.shape[-1] != weight.numel():
                raise ValueError(f'class_weight has {weight.numel()} entries for '
                                 f'{cls_score.shape[-1]} logits (num_classes + 1).')
            cls_score = cls_score.masked_fill(weight == 0, _EXCLUDED_LOGIT)
            label_weights = label_weights * weight[labels]
        return super().loss(cls_score, bbox_pred, rois, labels, label_weights, bbox_targets,
                            bbox_weights, reduction_override=reduction_override)

    def _predict_by_feat_single(self, roi: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                                img_meta: dict, rescale: bool = False,
                                rcnn_test_cfg=None) -> InstanceData:
        """mmdet's post-processing; with a sigmoid loss the scores are sigmoids, not a softmax
        (mmdet's BBoxHead always applies softmax to plain losses); ``extra_test_embeddings``
        columns are scored, then their detections dropped."""
        num_extra = cls_score.shape[-1] - self.num_classes - 1 if cls_score is not None else 0
        if roi.shape[0] == 0:
            return super()._predict_by_feat_single(roi, cls_score, bbox_pred, img_meta,
                                                   rescale=rescale, rcnn_test_cfg=rcnn_test_cfg)
        scores = self.scores_from_cls(cls_score)
        results = self._post_process(roi, scores, bbox_pred, img_meta, rescale, rcnn_test_cfg)
        if num_extra == 0:
            return results
        if rcnn_test_cfg is None:  # raw scores: the reported classes and the background
            keep = list(range(self.num_classes)) + [scores.shape[-1] - 1]
            results.scores = results.scores[:, keep]
            return results
        return results[results.labels < self.num_classes]

    def scores_from_cls(self, cls_score: Tensor) -> Tensor:
        """Class probabilities from what :meth:`forward` returns in evaluation: sigmoids with a
        sigmoid loss, else a softmax (mmdet's BBoxHead always applies softmax)."""
        if getattr(self.loss_cls, 'use_sigmoid', False):
            return cls_score.sigmoid()
        return F.softmax(cls_score, dim=-1)

    def _post_process(self, roi, scores, bbox_pred, img_meta, rescale, rcnn_test_cfg):
        # mmdet 3.3.0 BBoxHead._predict_by_feat_single after its softmax, unchanged: decoding,
        # rescaling, multiclass NMS over every scored column (the extra ones included).
        results = InstanceData()
        img_shape = img_meta['img_shape']
        num_rois = roi.size(0)
        if bbox_pred is not None:
            num_classes = 1 if self.reg_class_agnostic else self.num_classes
            roi = roi.repeat_interleave(num_classes, dim=0)
            bbox_pred = bbox_pred.view(-1, self.bbox_coder.encode_size)
            bboxes = self.bbox_coder.decode(roi[..., 1:], bbox_pred, max_shape=img_shape)
        else:
            bboxes = roi[:, 1:].clone()
            if img_shape is not None and bboxes.size(-1) == 4:
                bboxes[:, [0, 2]].clamp_(min=0, max=img_shape[1])
                bboxes[:, [1, 3]].clamp_(min=0, max=img_shape[0])
        if rescale and bboxes.size(0) > 0:
            if img_meta.get('scale_factor') is None:
                raise KeyError("rescale=True needs img_meta['scale_factor'].")
            bboxes = scale_boxes(bboxes, [1 / s for s in img_meta['scale_factor']])
        bboxes = get_box_tensor(bboxes)
        box_dim = bboxes.size(-1)
        bboxes = bboxes.view(num_rois, -1)
        if rcnn_test_cfg is None:
            results.bboxes = bboxes
            results.scores = scores
        else:
            det_bboxes, det_labels = multiclass_nms(
                bboxes, scores, rcnn_test_cfg.score_thr, rcnn_test_cfg.nms,
                rcnn_test_cfg.max_per_img, box_dim=box_dim)
            results.bboxes = det_bboxes[:, :-1]
            results.scores = det_bboxes[:, -1]
            results.labels = det_labels
        return results


@MODELS.register_module()
class BaronConvFCBBoxHead(BaronBBoxHead, ConvFCBBoxHead):
    """:class:`BaronBBoxHead` with mmdet's ConvFC layout: shared convs/fcs, then cls and reg
    branches; the cls branch ends in the pseudo-word projection. Same args as both parents,
    plus:

    Args:
        norm_eval: keep the norm layers of the convs in eval mode while training (running
            statistics frozen; with ``norm_cfg=dict(type='BN', requires_grad=False)`` their
            affine parameters are frozen too), BARON's OV-COCO box head: bag regions pass
            through it without changing the statistics. mmdet's ConvFCBBoxHead lacks it.
    """

    def __init__(self, *args, norm_eval: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm_eval = norm_eval

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def _forward_branches(self, x: Tensor):
        return ConvFCBBoxHead.forward(self, x)


# the two box-head layouts BARON uses (shared convs/fcs only, no separate cls/reg branches)
_SHARED2FC = dict(num_shared_convs=0, num_shared_fcs=2, num_cls_convs=0, num_cls_fcs=0,
                  num_reg_convs=0, num_reg_fcs=0)
_SHARED4CONV1FC = dict(_SHARED2FC, num_shared_convs=4, num_shared_fcs=1)


@MODELS.register_module()
class BaronShared2FCBBoxHead(BaronConvFCBBoxHead):
    """Two shared fcs (Faster R-CNN's default box head layout)."""

    def __init__(self, fc_out_channels: int = 1024, **kwargs) -> None:
        super().__init__(fc_out_channels=fc_out_channels, **_SHARED2FC, **kwargs)


@MODELS.register_module()
class BaronShared4Conv1FCBBoxHead(BaronConvFCBBoxHead):
    """Four shared convs and one shared fc (BARON's OV-COCO/LVIS FPN configuration)."""

    def __init__(self, fc_out_channels: int = 1024, **kwargs) -> None:
        super().__init__(fc_out_channels=fc_out_channels, **_SHARED4CONV1FC, **kwargs)


@MODELS.register_module()
class EnsembleBaronConvFCBBoxHead(BaronConvFCBBoxHead):
    """BARON-KD with a separate distillation branch and score ensembling at test time (the
    reference's ``EnsembleBaronConvFCBBoxHead``, its ``baron_kd_ens`` OV-LVIS config).

    The pseudo words that the bag and single-region losses see come from ``kd_head``, a second
    box head on the same RoI features (``rois_to_words`` is the KD path); this head's own words
    are trained by the classification loss only. In evaluation both are scored against the same
    class and background embeddings, and with ``p`` this head's probabilities and ``q`` the KD
    branch's, ``f = ensemble_factor``::

        base classes and background:  p ** f * q ** (1 - f)
        novel classes:                p ** (1 - f) * q ** f

    so the classes left out of training are scored mostly by the branch that only ever learned
    from CLIP. Novel are the classes with training weight 0 (``novel_class_ids``, or 0 in a
    ``class_weight`` list or category-info file, as the reference reads its no-rare category
    info) and any ``extra_test_embeddings``; with no such split (e.g. a vocabulary given at run
    time), every class counts as base. :meth:`forward` then returns these scores instead of
    logits, and prediction uses them as they are (no softmax over them).

    Args:
        kd_head: config of the KD branch, a BARON box head (the reference's ``kd``); unset
            ``num_classes``, ``num_words``, ``word_dim``, ``cls_embeddings_path`` and
            ``text_layer`` are taken from this head, and ``with_reg`` defaults to False.
        ensemble_factor: ``f`` above, in (0.5, 1) (the reference: 2/3).
    """

    def __init__(self, *args, kd_head: dict, ensemble_factor: float = 2.0 / 3.0,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0.5 < ensemble_factor < 1.0:
            raise ValueError(f'ensemble_factor={ensemble_factor} must lie in (0.5, 1): base '
                             'classes weigh this head more, novel classes the KD branch.')
        cfg = dict(kd_head)
        kd_type = cfg.get('type')
        kd_type = MODELS.get(kd_type) if isinstance(kd_type, str) else kd_type
        if not (isinstance(kd_type, type) and issubclass(kd_type, BaronBBoxHead)):
            raise TypeError(f"kd_head type='{cfg.get('type')}' must be a BARON box head (e.g. "
                            'BaronShared4Conv1FCBBoxHead).')
        for key, value in dict(num_classes=self.num_classes, num_words=self.num_words,
                               word_dim=self.word_dim, cls_embeddings_path=self.cls_embeddings,
                               text_layer=self.text_layer, with_reg=False).items():
            cfg.setdefault(key, value)
        self.kd_head = MODELS.build(cfg)
        if (self.kd_head.num_words, self.kd_head.word_dim) != (self.num_words, self.word_dim):
            raise ValueError(f'kd_head has num_words={self.kd_head.num_words}, word_dim='
                             f'{self.kd_head.word_dim}; both heads must give the same pseudo '
                             f'words ({self.num_words} x {self.word_dim}).')
        if self.kd_head.text_layer != self.text_layer:  # its words are encoded by this head
            raise ValueError(f'kd_head has text_layer={self.kd_head.text_layer} (or '
                             f'use_attn12_output) but this head {self.text_layer}; the KD '
                             'branch\'s words are encoded with this head\'s text layer, so set '
                             'it here (or leave it unset in kd_head).')
        self.ensemble_factor = float(ensemble_factor)

    def set_clip(self, clip) -> None:
        super().set_clip(clip)
        self.kd_head.set_clip(clip)

    def rois_to_words(self, x: Tensor) -> Tensor:
        """The KD path: pseudo words of the KD branch."""
        return self.kd_head.rois_to_words(x)

    def novel_mask(self, num_columns: int) -> Tensor:
        """[num_columns] bool: which score columns (classes, extra test classes, background
        last) the ensemble treats as novel."""
        novel = torch.zeros(num_columns, dtype=torch.bool, device=self.cls_embeddings.device)
        if self.class_weight is not None and self.class_weight.numel() == self.num_classes + 1:
            novel[:self.num_classes] = self.class_weight[:self.num_classes] == 0
        novel[self.num_classes:num_columns - 1] = True  # extra_test_embeddings
        return novel

    def forward(self, x: Tensor) -> tuple:
        """Training: this head's logits (the KD branch is reached by ``rois_to_words``).
        Evaluation: the ensembled scores [N, columns] (see the class docstring)."""
        cls_score, bbox_pred = super().forward(x)
        if self.training:
            return cls_score, bbox_pred
        kd_score = self.cls_logits(self.encode_words(self.kd_head.rois_to_words(x)))
        p = super().scores_from_cls(cls_score)
        q = super().scores_from_cls(kd_score)
        f = self.ensemble_factor
        novel = self.novel_mask(p.shape[-1])
        scores = torch.where(novel, p ** (1 - f) * q ** f, p ** f * q ** (1 - f))
        return scores, bbox_pred

    def scores_from_cls(self, cls_score: Tensor) -> Tensor:
        """:meth:`forward` already returns the ensembled scores in evaluation."""
        return cls_score


@MODELS.register_module()
class EnsembleBaronShared2FCBBoxHead(EnsembleBaronConvFCBBoxHead):
    """:class:`EnsembleBaronConvFCBBoxHead` with two shared fcs."""

    def __init__(self, fc_out_channels: int = 1024, **kwargs) -> None:
        super().__init__(fc_out_channels=fc_out_channels, **_SHARED2FC, **kwargs)


@MODELS.register_module()
class EnsembleBaronShared4Conv1FCBBoxHead(EnsembleBaronConvFCBBoxHead):
    """:class:`EnsembleBaronConvFCBBoxHead` with four shared convs and one shared fc."""

    def __init__(self, fc_out_channels: int = 1024, **kwargs) -> None:
        super().__init__(fc_out_channels=fc_out_channels, **_SHARED4CONV1FC, **kwargs)
