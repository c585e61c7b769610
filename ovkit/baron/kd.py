"""BARON's bag-of-regions alignment with a frozen CLIP teacher ("BaronKD").

A bag's pseudo words (the words of its member regions, each shifted by an embedding of the
region's place in the bag) are read as one sentence by the CLIP text encoder (the student
path: gradients flow into the detector through the words). The CLIP image encoder sees the
bag's spanned box (the teacher, no gradients). A symmetric InfoNCE pulls the two together,
with in-batch bags and queued features of earlier batches as negatives. A weaker single-region
loss does the same for each member region: the text encoder's outputs at the region's words
within the bag sentence, against CLIP patch features pooled over the region. As in the
reference, both sides of it read MaskCLIP-style tokens by default (the last block's value path,
anchored at the end token / class token; see ``ovkit.clip.model._value_path_forward``).
"""
import inspect
import math
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS
from torchvision.ops import roi_align

from .bag_sampler import BagSampler
from .boxes_cache import build_boxes_cache
from .queues import FeatureQueue

__all__ = ['BaronKD', 'BoxPositionEmbedding', 'symmetric_info_nce']

# Images without an ``img_id`` get ids from a counter starting here, far above dataset ids.
_ANON_ID_BASE = 1 << 40


def symmetric_info_nce(text, image, temperature, group_ids, image_ids,
                       text_queue=None, image_queue=None):
    """Symmetric InfoNCE between row-matched ``text`` and ``image`` features [N, D].

    Row i's positive is row i of the other modality. Negatives are the other in-batch rows,
    except those of the same group (another word order of the same bag, or the same region in
    another bag: they show the same pixels), and queued features (``(feats [Q, D], ids [Q])``)
    except those of the same image (as in the reference, in-batch rows of the same image stay
    negatives). Features are expected L2-normalised.

    Returns ``0.5 * CE(text -> image keys) + 0.5 * CE(image -> text keys)``, averaged over rows.
    """
    n = text.shape[0]
    if image.shape != text.shape:
        raise ValueError(f'text {tuple(text.shape)} and image {tuple(image.shape)} features '
                         f'must match')
    if group_ids.shape != (n,) or image_ids.shape != (n,):
        raise ValueError(f'group_ids {tuple(group_ids.shape)} and image_ids '
                         f'{tuple(image_ids.shape)} must both be [{n}]')
    if n == 0:
        return text.sum() * 0.0
    same_group = group_ids[:, None] == group_ids[None, :]
    same_group.fill_diagonal_(False)
    labels = torch.arange(n, device=text.device)

    def one_way(queries, keys, queue):
        logits = temperature * queries @ keys.t()
        logits = logits.masked_fill(same_group, -math.inf)
        if queue is not None and queue[0].shape[0] > 0:
            q_feats, q_ids = queue
            q_logits = temperature * queries @ q_feats.to(queries).t()
            q_logits = q_logits.masked_fill(image_ids[:, None] == q_ids[None, :], -math.inf)
            logits = torch.cat([logits, q_logits], 1)
        return F.cross_entropy(logits, labels)

    return 0.5 * one_way(text, image, image_queue) + 0.5 * one_way(image, text, text_queue)


class BoxPositionEmbedding(nn.Module):
    """(cx, cy, w, h) of a region within its bag -> offsets for its ``num_words`` words.

    Without it a bag's sentence would not say where each region lies in the spanned box.
    Sine features of the four numbers, then Linear-LayerNorm-Linear, as in the reference (same
    feature layout: per coordinate, sin and cos of each frequency interleaved).
    """

    def __init__(self, num_words, word_dim, num_feats=128, temperature=1.2):
        super().__init__()
        if num_feats % 2:
            raise ValueError(f'num_feats must be even (sin/cos pairs), got {num_feats}')
        self.num_words, self.word_dim = num_words, word_dim
        freqs = temperature ** (torch.arange(num_feats // 2, dtype=torch.float32)
                                - num_feats // 4)
        self.register_buffer('freqs', freqs * 2 * math.pi, persistent=False)
        self.proj = nn.Sequential(
            nn.Linear(4 * num_feats, word_dim), nn.LayerNorm(word_dim),
            nn.Linear(word_dim, num_words * word_dim))

    def forward(self, pos):
        angles = pos.float()[:, :, None] * self.freqs
        feats = torch.stack([angles.sin(), angles.cos()], -1).flatten(1)
        return self.proj(feats).view(-1, self.num_words, self.word_dim)


@MODELS.register_module()
class BaronKD(nn.Module):
    """Bag-of-regions alignment losses of BARON (CVPR 2023), owned by the RoI head.

    Args:
        num_words: pseudo words per region (what ``boxes_to_words`` returns).
        word_dim: width of a pseudo word = the CLIP text encoder width.
        embed_dim: CLIP joint embedding size; fixes the queues' width.
        sampler: kwargs of :class:`BagSampler`.
        bag_temp, bag_weight: temperature and weight of the bag loss (30, 1.0).
        single_temp, single_weight: the same for the single-region loss (50, 0.1); weight 0
            skips it (and the dense teacher pass).
        queue_length: entries per queue (4 queues: bag text/image, region text/image).
        word_drop_ratio: in training each word of each sentence is dropped with this probability
            (at least one word of a region is kept), so a bag cannot be matched from a few
            dominant words.
        pos_feats: sine features per coordinate in :class:`BoxPositionEmbedding`.
        clip_pixel_scale: pixel value of 1.0 in CLIP's ``image_mean``/``image_std`` units;
            None guesses 255 when those are all <= 1 (open_clip style) and 1 otherwise.
        single_features: token features of the single-region loss: ``'maskclip'`` (the
            reference: word tokens and patch tokens through the last block's value path) or
            ``'plain'`` (ordinary causal word outputs and ViT patch outputs).
        boxes_cache: kwargs of :class:`ovkit.baron.BoxesCache` (``start_iter``,
            ``num_boxes``, ``nms_thr``, ``score_thr``), or None for no cache.

    The queues are non-persistent buffers (see :class:`FeatureQueue`); they are updated after
    the loss, without gradients, and only in training mode. ``kd_iter`` counts training calls
    (a persistent buffer, so a resumed run starts the boxes cache on time).
    """

    QUEUES = ('bag_text', 'bag_image', 'single_text', 'single_image')

    def __init__(self,
                 num_words=6,
                 word_dim=512,
                 embed_dim=512,
                 sampler=None,
                 bag_temp=30.0,
                 bag_weight=1.0,
                 single_temp=50.0,
                 single_weight=0.1,
                 queue_length=1024,
                 word_drop_ratio=0.5,
                 pos_feats=128,
                 clip_pixel_scale=None,
                 single_features='maskclip',
                 boxes_cache=None):
        super().__init__()
        if single_features not in ('maskclip', 'plain'):
            raise ValueError(f"single_features={single_features!r}: use 'maskclip' (the "
                             "reference's value-path tokens) or 'plain'.")
        if not 0.0 <= word_drop_ratio < 1.0:
            raise ValueError(f'word_drop_ratio must lie in [0, 1), got {word_drop_ratio}')
        if bag_weight < 0 or single_weight < 0:
            raise ValueError('loss weights must be >= 0')
        self.num_words, self.word_dim, self.embed_dim = num_words, word_dim, embed_dim
        self.sampler = BagSampler(**(sampler or {}))
        self.bag_temp, self.bag_weight = float(bag_temp), float(bag_weight)
        self.single_temp, self.single_weight = float(single_temp), float(single_weight)
        self.word_drop_ratio = float(word_drop_ratio)
        self.clip_pixel_scale = clip_pixel_scale
        self.pos_embed = BoxPositionEmbedding(num_words, word_dim, pos_feats)
        self.queues = nn.ModuleDict({k: FeatureQueue(queue_length, embed_dim)
                                     for k in self.QUEUES})
        self.single_features = single_features
        self.boxes_cache = build_boxes_cache(boxes_cache)
        self._warn_if_cache_drops_centres()
        self.register_buffer('kd_iter', torch.zeros((), dtype=torch.long))
        self._next_anon_id = 0

    def _warn_if_cache_drops_centres(self):
        """The cache keeps only boxes scoring above its ``score_thr``, in the same objectness
        units as the sampler's ``objectness_thr``. Above it, the cache silently replaces the
        proposal centres from ``start_iter`` on by the ground truth (score 1) and the best box
        per image: on shapes, with a from-scratch RPN scoring <= 0.26, that ended bags on novel
        shapes halfway through training (the reference sets both to 0.85)."""
        cache, sampler = self.boxes_cache, self.sampler
        if cache is None or cache.score_thr <= sampler.objectness_thr:
            return
        from mmengine.logging import print_log
        print_log(f'BaronKD: boxes_cache.score_thr={cache.score_thr:g} is above '
                  f'sampler.objectness_thr={sampler.objectness_thr:g}: from iteration '
                  f'{cache.start_iter} on, proposals scoring between the two stop being bag '
                  'centres (the cache keeps only boxes above its threshold, and ground truth). '
                  'Set them equal (the reference uses 0.85 for both) unless that is intended.',
                  logger='current', level=30)

    # ------------------------------------------------------------------ forward
    def forward(self, x_feats, rpn_results, batch_inputs, batch_img_metas, mean, std, clip,
                boxes_to_words, batch_gt_bboxes=None, generator=None):
        """Losses of one batch.

        Args:
            x_feats: detector features, passed through to ``boxes_to_words``.
            rpn_results: per image, an ``InstanceData`` with ``bboxes`` (and ``scores``) or a
                [n, 4|5] tensor, in the coordinates of ``batch_inputs``.
            batch_inputs: [B, 3, H, W] RGB images normalised with the detector's ``mean``/
                ``std`` (as its data preprocessor leaves them).
            batch_img_metas: per image a dict with ``img_shape`` and optionally ``img_id``
                (missing ids come from a counter, i.e. every image counts as new).
            mean, std: the detector data preprocessor's 3-channel mean and std.
            clip: the CLIP wrapper (``encode_pseudo_text`` (with ``return_word_tokens`` and
                ``word_token_mode`` for the single-region loss), ``encode_image`` (with
                ``dense_mode`` for it), ``image_size``, ``image_mean``, ``image_std``).
            boxes_to_words: ``(x_feats, rois [R, 5]) -> [R, num_words, word_dim]``.
            batch_gt_bboxes: per image [g, 4] boxes, used when the sampler has ``use_gt``.
            generator: ``torch.Generator`` for the bags and the word dropout.

        Returns:
            dict(loss_bag=..., loss_single=...), weights applied. Images without proposals
            contribute nothing; a batch without any bag gives zeros tied to this module's
            parameters, so backward and DDP still work.
        """
        self._check_clip(clip)
        num_imgs = len(batch_img_metas)
        if len(rpn_results) != num_imgs:
            raise ValueError(f'{len(rpn_results)} rpn results for {num_imgs} images')
        if batch_inputs.dim() != 4 or batch_inputs.shape[:2] != (num_imgs, 3):
            raise ValueError(f'batch_inputs must be [{num_imgs}, 3, H, W], got '
                             f'{tuple(batch_inputs.shape)}')
        try:
            img_shapes = [tuple(m['img_shape'][:2]) for m in batch_img_metas]
        except (KeyError, TypeError) as e:
            raise ValueError('every entry of batch_img_metas needs an img_shape (h, w)') from e
        proposals = [_as_proposals(r) for r in rpn_results]
        if batch_gt_bboxes is not None and len(batch_gt_bboxes) != num_imgs:
            raise ValueError(f'{len(batch_gt_bboxes)} gt_bboxes tensors for {num_imgs} images')
        use_gt = self.sampler.use_gt and batch_gt_bboxes is not None
        centres = [self.sampler.select_centres(p, shape, batch_gt_bboxes[i] if use_gt else None,
                                               return_scores=True)
                   for i, (p, shape) in enumerate(zip(proposals, img_shapes))]
        if self.training:
            if self.boxes_cache is not None:
                centres = self.boxes_cache.merge(centres, batch_img_metas, int(self.kd_iter))
            self.kd_iter += 1
        samples = self.sampler.sample_from_centres(centres, img_shapes, generator)
        image_ids = self._image_ids(batch_img_metas)
        device = batch_inputs.device
        batch = _collate(samples, image_ids, device)
        if batch is None:
            zero = self._zero()
            return dict(loss_bag=zero, loss_single=zero.clone())

        words = boxes_to_words(x_feats, batch['region_rois'])
        expected = (batch['region_rois'].shape[0], self.num_words, self.word_dim)
        if tuple(words.shape) != expected:
            raise ValueError(f'boxes_to_words returned {tuple(words.shape)}, expected '
                             f'{expected} (num_words={self.num_words}, '
                             f'word_dim={self.word_dim})')
        entry_words = words[batch['region_index']] \
            + self.pos_embed(batch['box_pos']).to(words.dtype)

        # student: each word order of each bag is one sentence
        seq = batch['sequences']
        present = seq >= 0
        length = int(present.sum(1).max())
        seq, present = seq[:, :length], present[:, :length]
        idx = seq.clamp(min=0)
        seq_words = (entry_words[idx] * present[..., None, None]).flatten(1, 2)
        # word dropout per word of each sentence: the two word orders of a bag drop different
        # words, as the reference's per-permutation masks do
        keep = self._word_keep_mask(seq.numel(), device, generator).view(*seq.shape, -1)
        seq_valid = (keep & present[..., None]).flatten(1, 2)
        single = self.single_weight > 0
        maskclip = self.single_features == 'maskclip'
        if single:
            bag_text, word_tokens = clip.encode_pseudo_text(
                seq_words, seq_valid, normalize=True, return_word_tokens=True,
                word_token_mode='maskclip' if maskclip else 'causal')
        else:
            bag_text = clip.encode_pseudo_text(seq_words, seq_valid, normalize=True)
        bag_text = bag_text.float()
        self._check_dim(bag_text, 'encode_pseudo_text')

        # teacher: CLIP on the spanned boxes
        with torch.no_grad():
            crops = self.clip_crops(batch_inputs, mean, std, clip, batch['span_rois'])
            if single:  # one pass gives the global and the dense features
                bag_image, dense = clip.encode_image(
                    crops, normalize=True, dense_mode='maskclip' if maskclip else 'plain')
                dense = dense.float()
            else:
                bag_image, dense = clip.encode_image(crops, normalize=True), None
            bag_image = bag_image.float()
            self._check_dim(bag_image, 'encode_image')

        seq_bag, seq_img = batch['seq_bag'], batch['seq_img_ids']
        loss_bag = symmetric_info_nce(
            bag_text, bag_image[seq_bag], self.bag_temp, seq_bag, seq_img,
            self.queues['bag_text'].get(), self.queues['bag_image'].get())
        updates = dict(bag_text=(bag_text, seq_img), bag_image=(bag_image[seq_bag], seq_img))

        if single:
            # a region's text feature: the mean output of its kept words within each sentence
            # it appears in (one entry per word order, as in the reference)
            tokens = word_tokens.float().unflatten(1, (length, self.num_words))
            valid = seq_valid.unflatten(1, (length, self.num_words))[..., None].float()
            region_text = (tokens * valid).sum(2) / valid.sum(2).clamp(min=1)
            region_text = F.normalize(region_text[present], dim=-1)
            self._check_dim(region_text, 'encode_pseudo_text(return_word_tokens=True)')
            entry = seq[present]
            patch = self.pool_patches(dense, batch['bag_ids'], batch['box_pos'])[entry]
            entry_img = batch['entry_img_ids'][entry]
            loss_single = symmetric_info_nce(
                region_text, patch, self.single_temp, batch['region_index'][entry], entry_img,
                self.queues['single_text'].get(), self.queues['single_image'].get())
            updates.update(single_text=(region_text, entry_img), single_image=(patch, entry_img))
        else:
            loss_single = self._zero()

        if self.training:
            for name, (feats, ids) in updates.items():
                self.queues[name].push(feats.detach(), ids)
        return dict(loss_bag=loss_bag * self.bag_weight,
                    loss_single=loss_single * self.single_weight)

    # ------------------------------------------------------------------ teacher inputs
    def clip_crops(self, batch_inputs, mean, std, clip, rois):
        """Crop ``rois`` [G, 5] to CLIP's input size from CLIP-normalised images.

        The detector normalised with its own mean/std: undo that, then apply CLIP's.
        Both are affine per channel, so renormalising before cropping equals cropping first.
        """
        mean = torch.as_tensor(mean, dtype=torch.float32, device=batch_inputs.device)
        std = torch.as_tensor(std, dtype=torch.float32, device=batch_inputs.device)
        clip_mean = torch.as_tensor(clip.image_mean, dtype=torch.float32,
                                    device=batch_inputs.device).flatten()
        clip_std = torch.as_tensor(clip.image_std, dtype=torch.float32,
                                   device=batch_inputs.device).flatten()
        for name, t in (('mean', mean), ('std', std), ('clip.image_mean', clip_mean),
                        ('clip.image_std', clip_std)):
            if t.numel() != 3:
                raise ValueError(f'{name} must have 3 values (RGB), got {t.numel()}')
        scale = self.clip_pixel_scale
        if scale is None:
            scale = 255.0 if float(clip_mean.abs().max()) <= 1.0 else 1.0
        pixels = batch_inputs.float() * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
        images = (pixels - scale * clip_mean.view(1, 3, 1, 1)) / (scale * clip_std.view(1, 3, 1, 1))
        size = int(clip.image_size)
        return roi_align(images, rois.float(), (size, size), spatial_scale=1.0,
                         sampling_ratio=2, aligned=True)

    @staticmethod
    def pool_patches(dense, bag_ids, box_pos):
        """Average CLIP's dense features [G, D, h, w] of each bag over each member region.

        ``box_pos`` is (cx, cy, w, h) in the bag's unit frame, which is also the crop's frame.
        Average of roi_align samples (sampling ratio 2, as the reference) in one output cell.
        """
        h, w = dense.shape[-2:]
        xy1 = box_pos[:, :2] - box_pos[:, 2:] / 2
        xy2 = box_pos[:, :2] + box_pos[:, 2:] / 2
        scale = box_pos.new_tensor([w, h, w, h])
        rois = torch.cat([bag_ids[:, None].to(box_pos), torch.cat([xy1, xy2], 1) * scale], 1)
        pooled = roi_align(dense, rois.to(dense.dtype), (1, 1), spatial_scale=1.0,
                           sampling_ratio=2, aligned=True)
        return F.normalize(pooled.flatten(1), dim=-1)

    # ------------------------------------------------------------------ helpers
    def _word_keep_mask(self, num, device, generator):
        keep = torch.ones(num, self.num_words, dtype=torch.bool, device=device)
        if not self.training or self.word_drop_ratio == 0.0 or num == 0:
            return keep
        gen_device = generator.device if generator is not None else device
        u = torch.rand(num, self.num_words, generator=generator, device=gen_device).to(device)
        keep = u >= self.word_drop_ratio
        keep[:, 0] |= ~keep.any(1)
        return keep

    def _image_ids(self, metas):
        ids = []
        for meta in metas:
            img_id = meta.get('img_id') if hasattr(meta, 'get') else None
            if img_id is None:
                img_id = _ANON_ID_BASE + self._next_anon_id
                self._next_anon_id += 1
            elif isinstance(img_id, str) or not float(img_id).is_integer() or int(img_id) < 0:
                # stable across processes, unlike hash()
                img_id = zlib.crc32(str(img_id).encode())
            ids.append(int(img_id))
        return ids

    def _zero(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return self.queues['bag_text'].feats.new_zeros(())
        return sum(p.sum() for p in params) * 0.0

    def _check_clip(self, clip):
        for attr in ('encode_pseudo_text', 'encode_image', 'image_size', 'image_mean',
                     'image_std'):
            if not hasattr(clip, attr):
                raise TypeError(f'clip object lacks {attr!r}; BaronKD needs the ovkit.clip '
                                f'interface')
        if self.single_weight > 0:
            for method, arg in (('encode_pseudo_text', 'word_token_mode'),
                                ('encode_image', 'dense_mode')):
                try:
                    params = inspect.signature(getattr(clip, method)).parameters
                except (TypeError, ValueError):
                    params = {}
                if arg not in params:
                    raise TypeError(f'the single-region loss needs clip.{method}(..., {arg}=); '
                                    'use ovkit.clip or set single_weight=0')
        for attr, mine in (('text_width', self.word_dim), ('embed_dim', self.embed_dim)):
            theirs = getattr(clip, attr, mine)
            if theirs != mine:
                raise ValueError(f'clip.{attr} is {theirs} but BaronKD was built with '
                                 f'{"word_dim" if attr == "text_width" else attr}={mine}')

    def _check_dim(self, feats, what):
        if feats.dim() != 2 or feats.shape[1] != self.embed_dim:
            raise ValueError(f'clip.{what} returned {tuple(feats.shape)}, expected '
                             f'[n, {self.embed_dim}] (embed_dim)')


def _as_proposals(result):
    """RPN output of one image -> [n, 4] or [n, 5] tensor."""
    if torch.is_tensor(result):
        return result
    bboxes = getattr(result, 'bboxes', None)
    if bboxes is None:
        raise TypeError(f'rpn result must be a tensor or have .bboxes, got {type(result)}')
    bboxes = getattr(bboxes, 'tensor', bboxes)  # mmdet box types
    scores = getattr(result, 'scores', None)
    if scores is None:
        return bboxes
    return torch.cat([bboxes[:, :4], scores.reshape(-1, 1).to(bboxes)], 1)


def _collate(samples, image_ids, device):
    """Concatenate per-image bags with global indices; None when there is no bag at all."""
    parts = {k: [] for k in ('region_rois', 'region_index', 'bag_ids', 'box_pos',
                             'entry_img_ids', 'span_rois', 'sequences', 'seq_bag',
                             'seq_img_ids')}
    n_regions = n_entries = n_bags = 0
    for i, (s, img_id) in enumerate(zip(samples, image_ids)):
        if s['seq_bag'].shape[0] == 0:
            continue
        regions, spanned = s['regions'].to(device), s['spanned'].to(device)
        m, s_len = s['bag_ids'].shape[0], s['seq_bag'].shape[0]
        parts['region_rois'].append(torch.cat([regions.new_full((len(regions), 1), i),
                                               regions], 1))
        parts['span_rois'].append(torch.cat([spanned.new_full((len(spanned), 1), i),
                                             spanned], 1))
        parts['region_index'].append(s['region_index'].to(device) + n_regions)
        parts['bag_ids'].append(s['bag_ids'].to(device) + n_bags)
        parts['box_pos'].append(s['box_pos'].to(device))
        seq = s['sequences'].to(device)
        parts['sequences'].append(torch.where(seq >= 0, seq + n_entries, -1))
        parts['seq_bag'].append(s['seq_bag'].to(device) + n_bags)
        parts['entry_img_ids'].append(torch.full((m,), img_id, dtype=torch.long, device=device))
        parts['seq_img_ids'].append(torch.full((s_len,), img_id, dtype=torch.long,
                                               device=device))
        n_regions += len(regions)
        n_entries += m
        n_bags += len(spanned)
    if n_bags == 0:
        return None
    return {k: torch.cat(v) for k, v in parts.items()}
