"""A frozen CLIP whose text encoder also takes pseudo-word embeddings.

Open-vocabulary detectors (BARON) turn region features into "pseudo words" that live in CLIP's
word-embedding space and read them with CLIP's text encoder. open_clip only encodes token ids
with a fixed 77-token context, so this wrapper runs the text (and image) transformer blocks
itself: the weights are open_clip's, the attention is ``F.scaled_dot_product_attention`` with a
causal mask over a context only as long as the longest sequence in the batch. Class embeddings
(:meth:`CLIPModel.encode_text`) and region embeddings (:meth:`CLIPModel.encode_pseudo_text`)
share one code path, so both live in the same space for every ``layer``.
"""
import functools
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['CLIPModel']


def _block_forward(block: nn.Module, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """One open_clip ``ResidualAttentionBlock`` on batch-first ``x`` [N, L, C].

    Same math as the block's own forward (pre-LN attention + MLP, optional layer scale), but the
    attention runs through SDPA so any context length works and the fused kernels are used.
    """
    attn = block.attn
    n, length, width = x.shape
    heads = attn.num_heads
    y = block.ln_1(x)
    qkv = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(n, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = attn.out_proj(out.transpose(1, 2).reshape(n, length, width))
    x = x + block.ls_1(out)
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _value_path_forward(block: nn.Module, x: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """MaskCLIP-style outputs of ``block`` for every token of its input ``x`` [N, L, C].

    Each token skips the attention mixing: it keeps only its own value, ``out_proj(v(ln_1(x)))``,
    added to ``anchor`` [N, C] (the input of the token the sequence is summarised at: the end
    token of a text, the class token of an image) instead of to itself, then the block's MLP
    residual as usual. Read from the BARON reference's last-block ``return_tokens`` path; this
    is what its single-region loss compares on both the text and the image side.
    """
    attn = block.attn
    width = x.shape[-1]
    value = F.linear(block.ln_1(x), attn.in_proj_weight[2 * width:],
                     attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None)
    tokens = anchor[:, None] + block.ls_1(attn.out_proj(value))
    return tokens + block.ls_2(block.mlp(block.ln_2(tokens)))


def _length_buckets(kept: torch.Tensor, max_buckets: int = 4) -> List[torch.Tensor]:
    """Rows grouped by sequence length (kept words + 2) to cut padding: at most ``max_buckets``
    groups of contiguous lengths, chosen by dynamic programming to minimise the padded tokens
    plus a per-group charge (1/32 of the unsplit cost, at least 64 tokens) so that a split must
    pay for its extra pass through the blocks. One group (all rows) when splitting saves little.
    BARON's bag sentences range from 1 to 9 boxes of words, so one padded batch wastes most of
    its positions; the reference pads all of them to the longest.
    """
    lengths = kept.tolist()
    uniq = sorted(set(lengths))
    if len(uniq) == 1:
        return [torch.arange(len(lengths), device=kept.device)]
    counts = [0] * len(uniq)
    where = {u: i for i, u in enumerate(uniq)}
    for n in lengths:
        counts[where[n]] += 1
    cum = [0]
    for c in counts:
        cum.append(cum[-1] + c)
    m = len(uniq)
    charge = max(64.0, len(lengths) * (uniq[-1] + 2) / 32)
    inf = float('inf')
    # best[b][j]: cost of lengths uniq[:j] in b groups; cut[b][j]: start of the last group
    best = [[inf] * (m + 1) for _ in range(max_buckets + 1)]
    cut = [[0] * (m + 1) for _ in range(max_buckets + 1)]
    best[0][0] = 0.0
    for b in range(1, max_buckets + 1):
        for j in range(1, m + 1):
            for i in range(j):
                cost = best[b - 1][i] + (cum[j] - cum[i]) * (uniq[j - 1] + 2) + charge
                if cost < best[b][j]:
                    best[b][j], cut[b][j] = cost, i
    b = min(range(1, max_buckets + 1), key=lambda k: best[k][m])
    bounds, j = [], m
    while b > 0:
        i = cut[b][j]
        bounds.append((uniq[i], uniq[j - 1]))
        j, b = i, b - 1
    if len(bounds) == 1:
        return [torch.arange(len(lengths), device=kept.device)]
    return [((kept >= lo) & (kept <= hi)).nonzero().flatten() for lo, hi in reversed(bounds)]


# How per-token outputs are read: the ordinary transformer outputs, or the value path above.
TOKEN_MODES = ('causal', 'maskclip')


def _check_token_mode(mode: str, arg: str):
    if mode not in TOKEN_MODES:
        raise ValueError(f'{arg}={mode!r}: use one of {TOKEN_MODES} (maskclip: the value-path '
                         'tokens of the last block, as the BARON reference reads them).')


# Dense image features: the ordinary patch outputs or the value path (MaskCLIP).
DENSE_MODES = ('plain', 'maskclip')


def _check_dense_mode(mode: str):
    if mode not in DENSE_MODES:
        raise ValueError(f'dense mode {mode!r}: use one of {DENSE_MODES}.')


@functools.lru_cache(maxsize=None)
def _tokenizer(context_length: int):
    """open_clip's BPE tokenizer (bundled vocabulary, no download); built once per process."""
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer(context_length=context_length)


def _check_blocks(blocks: Sequence[nn.Module], tower: str, model_name: str):
    for block in blocks:
        if not isinstance(getattr(block, 'attn', None), nn.MultiheadAttention) \
                or not hasattr(block, 'ln_1') or hasattr(block, 'ln_1_kv'):
            raise NotImplementedError(
                f"CLIP model_name='{model_name}': the {tower} tower uses "
                f'{type(block).__name__} blocks; ovkit.clip supports the standard CLIP '
                'ResidualAttentionBlock (OpenAI/open_clip ViT and text transformers) only.')


class CLIPModel(nn.Module):
    """Frozen CLIP (open_clip weights) with pseudo-text, layer-k and dense image outputs.

    Always frozen: every parameter has ``requires_grad=False`` and the module stays in eval mode
    even when a parent calls ``.train()``, because BARON uses CLIP as a fixed teacher and text
    encoder. Build it with :func:`ovkit.clip.build_clip`. Gradients still flow *through* it to
    its inputs (pseudo words), which is what the detector trains.
    """

    def __init__(self, model: nn.Module, model_name: str = 'clip', image_mean=None,
                 image_std=None):
        super().__init__()
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from open_clip.model import CLIP
        if not isinstance(model, CLIP):
            raise NotImplementedError(
                f"CLIP model_name='{model_name}' builds an open_clip {type(model).__name__}; "
                'ovkit.clip supports the classic CLIP layout (token_embedding + transformer + '
                'text_projection), e.g. ViT-B-32, ViT-B-16, ViT-L-14.')
        _check_blocks(model.transformer.resblocks, 'text', model_name)
        self.model = model
        self.model_name = model_name
        self.tokenizer = _tokenizer(int(model.positional_embedding.shape[0]))
        self.sot_token_id = self.tokenizer.sot_token_id
        self.eot_token_id = self.tokenizer.eot_token_id
        self.pad_token_id = 0
        self.context_length = int(model.positional_embedding.shape[0])
        self.text_width = int(model.token_embedding.weight.shape[1])
        self.num_text_layers = len(model.transformer.resblocks)
        visual = model.visual
        self.embed_dim = self._infer_embed_dim()
        size = getattr(visual, 'image_size', 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.image_mean = tuple(image_mean or getattr(visual, 'image_mean', None)
                                or OPENAI_DATASET_MEAN)
        self.image_std = tuple(image_std or getattr(visual, 'image_std', None)
                               or OPENAI_DATASET_STD)
        self.requires_grad_(False)
        self.eval()

    def _infer_embed_dim(self) -> int:
        proj = self.model.text_projection
        if proj is None:
            return self.text_width
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    # ------------------------------------------------------------------ frozen behaviour
    def train(self, mode: bool = True):
        """Stay in eval mode: CLIP is a frozen teacher (no dropout, fixed statistics)."""
        return super().train(False)

    @property
    def token_embedding(self) -> nn.Embedding:
        """CLIP's word embedding table (``word_dim == text_width``); a view, not a copy."""
        return self.model.token_embedding

    @property
    def device(self) -> torch.device:
        return self.model.positional_embedding.device

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: List[str]) -> torch.Tensor:
        """CLIP BPE token ids, LongTensor [N, context_length] (77), on CLIP's device."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts), context_length=self.context_length).to(self.device)

    def _check_layer(self, layer: Optional[int]):
        if layer is None:
            return
        if isinstance(layer, bool) or not isinstance(layer, int) \
                or not 1 <= layer <= self.num_text_layers:
            raise ValueError(
                f'layer={layer!r}: must be None (all blocks + ln_final + text_projection) or an '
                f'int in [1, {self.num_text_layers}] (output after that many blocks) for CLIP '
                f"'{self.model_name}'.")

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.model.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj

    def _encode_sequence(self, x: torch.Tensor, end_idx: torch.Tensor, layer: Optional[int],
                         normalize: bool, token_mode: str = 'causal'):
        """Run embedded tokens ``x`` [N, L, C] (positions already added) through the blocks.

        Returns the end-token feature and all token outputs, both in the output space of
        ``layer`` (``None``: ln_final + projection; ``k``: raw output of block k). With
        ``token_mode='maskclip'`` the token outputs are the value-path outputs of the last block
        run (:func:`_value_path_forward`, anchored at the end token's input to that block).
        """
        blocks = self.model.transformer.resblocks[:self.num_text_layers if layer is None
                                                  else layer]
        rows = torch.arange(x.shape[0], device=x.device)
        tokens = None
        for i, block in enumerate(blocks):
            if token_mode == 'maskclip' and i == len(blocks) - 1:
                tokens = _value_path_forward(block, x, x[rows, end_idx])
            x = _block_forward(block, x, causal=True)
        if tokens is None:
            tokens = x
        if layer is None:
            x = self._project(self.model.ln_final(x))
            tokens = x if token_mode == 'causal' else self._project(self.model.ln_final(tokens))
        feat = x[rows, end_idx]
        if normalize:
            feat = F.normalize(feat, dim=-1)
        return feat, tokens

    def encode_text(self, tokens: torch.Tensor, layer: Optional[int] = None,
                    normalize: bool = True) -> torch.Tensor:
        """Features of token ids [N, <=77] at the end-of-text token.

        ``layer=None``: [N, embed_dim], as CLIP's own ``encode_text``. ``layer=k``: the output of
        block k (no ln_final, no projection), [N, text_width]; BARON's "attn12" is k=12. The
        context is cut after the longest sequence (the causal mask makes this exact).
        """
        self._check_layer(layer)
        if tokens.dim() != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(f'tokens must be [N, L<={self.context_length}], got '
                             f'{tuple(tokens.shape)}; use CLIPModel.tokenize(texts).')
        out_dim = self.embed_dim if layer is None else self.text_width
        if tokens.shape[0] == 0:
            return self.model.positional_embedding.new_zeros(0, out_dim)
        tokens = tokens.to(self.device)
        end_idx = tokens.argmax(dim=-1)  # end-of-text has the largest id (OpenAI convention)
        length = int(end_idx.max()) + 1
        x = self.token_embedding(tokens[:, :length]) \
            + self.model.positional_embedding[:length]
        return self._encode_sequence(x, end_idx, layer, normalize)[0]

    def special_embeddings(self):
        """Embeddings of the start, end and padding (id 0) tokens, each [text_width]."""
        weight = self.token_embedding.weight
        return weight[self.sot_token_id], weight[self.eot_token_id], weight[self.pad_token_id]

    def encode_pseudo_text(self, words: torch.Tensor, valid_mask: Optional[torch.Tensor] = None,
                           layer: Optional[int] = None, normalize: bool = True,
                           return_word_tokens: bool = False, word_token_mode: str = 'causal'):
        """Encode pseudo words [N, W, text_width] as if they were the words of a prompt.

        Each row becomes [start, kept words packed to the front in order, end, pad...] with pad =
        embedding of token id 0, positional embeddings added everywhere, context length = max kept
        + 2 among rows of similar length (:func:`_length_buckets`; exact, by the causal mask).
        ``valid_mask`` [N, W] (True = keep) drops words, e.g. word dropout.
        Returns [N, D] (end-token feature; D = embed_dim for ``layer=None``, text_width for
        ``layer=k``); with ``return_word_tokens`` also [N, W, D] per-word outputs (same space,
        not normalised; zero where a word was dropped), in the words' original slots.
        ``word_token_mode``: ``'causal'`` reads the ordinary outputs at the words' positions;
        ``'maskclip'`` reads each word through the last block's value path anchored at the end
        token (:func:`_value_path_forward`), the reference's single-region text features.
        """
        self._check_layer(layer)
        _check_token_mode(word_token_mode, 'word_token_mode')
        if words.dim() != 3 or words.shape[-1] != self.text_width:
            raise ValueError(f'words must be [N, W, {self.text_width}] (text_width of CLIP '
                             f"'{self.model_name}'), got {tuple(words.shape)}.")
        num, num_words, width = words.shape
        device = words.device
        if valid_mask is None:
            valid = torch.ones(num, num_words, dtype=torch.bool, device=device)
        else:
            if tuple(valid_mask.shape) != (num, num_words):
                raise ValueError(f'valid_mask must be [N, W] = {(num, num_words)}, got '
                                 f'{tuple(valid_mask.shape)}.')
            valid = valid_mask.to(device=device, dtype=torch.bool)
        out_dim = self.embed_dim if layer is None else self.text_width
        if num == 0 or num_words == 0:
            if num_words == 0 and num > 0:
                raise ValueError('words has W=0 pseudo words; a prompt needs at least one.')
            feat = words.new_zeros(num, out_dim)
            return (feat, words.new_zeros(num, num_words, out_dim)) if return_word_tokens \
                else feat
        kept = valid.sum(dim=1)  # [N]
        longest = int(kept.max()) + 2
        if longest > self.context_length:
            raise ValueError(f'{longest - 2} pseudo words + start/end tokens exceed the CLIP '
                             f'context length {self.context_length}.')
        mode = word_token_mode if return_word_tokens else 'causal'
        groups = _length_buckets(kept)
        if len(groups) == 1:
            return self._encode_packed(words, valid, kept, layer, normalize, mode,
                                       return_word_tokens)
        # Rows of similar length run together: the causal mask makes every row's result
        # independent of how far it is padded, so this only saves the padded positions.
        outs = [self._encode_packed(words[rows], valid[rows], kept[rows], layer, normalize,
                                    mode, return_word_tokens) for rows in groups]
        inverse = torch.empty(num, dtype=torch.long, device=device)
        inverse[torch.cat(groups)] = torch.arange(num, device=device)
        if not return_word_tokens:
            return torch.cat(outs)[inverse]
        return (torch.cat([o[0] for o in outs])[inverse],
                torch.cat([o[1] for o in outs])[inverse])

    def _encode_packed(self, words, valid, kept, layer, normalize, token_mode,
                       return_word_tokens):
        """:meth:`encode_pseudo_text` of rows padded to their longest kept + 2."""
        num, num_words, width = words.shape
        device = words.device
        length = int(kept.max()) + 2
        # Slot j of the packed sequence reads row entry src[:, j] of [words, start, end, pad].
        order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices  # kept first
        pos = torch.arange(length, device=device).expand(num, length)
        word_src = order.gather(1, (pos - 1).clamp(0, num_words - 1))
        kept_col = kept[:, None]
        src = torch.where(pos == 0, num_words,
                          torch.where(pos <= kept_col, word_src,
                                      torch.where(pos == kept_col + 1, num_words + 1,
                                                  num_words + 2)))
        sot, eot, pad = self.special_embeddings()
        dtype = torch.promote_types(words.dtype, sot.dtype)
        special = torch.stack([sot, eot, pad]).to(device=device, dtype=dtype)
        table = torch.cat([words.to(dtype), special.expand(num, 3, width)], dim=1)
        x = table.gather(1, src[..., None].expand(num, length, width))
        x = x + self.model.positional_embedding[:length].to(device)
        feat, tokens = self._encode_sequence(x, kept + 1, layer, normalize, token_mode)
        if not return_word_tokens:
            return feat
        # Where did original word w go? position 1 + (number of kept words before it).
        word_pos = (valid.long().cumsum(dim=1) - 1).clamp(min=0) + 1
        word_pos = word_pos.clamp(max=length - 1)
        word_tokens = tokens.gather(1, word_pos[..., None].expand(-1, -1, tokens.shape[-1]))
        word_tokens = word_tokens * valid[..., None].to(word_tokens.dtype)
        return feat, word_tokens

    # ------------------------------------------------------------------ image
    def _check_vit(self):
        visual = self.model.visual
        for attr in ('conv1', 'class_embedding', 'positional_embedding', 'transformer'):
            if not hasattr(visual, attr):
                raise NotImplementedError(
                    f"CLIP '{self.model_name}': dense image features need a ViT image tower, "
                    f'got {type(visual).__name__}.')
        if getattr(visual, 'attn_pool', None) is not None \
                or getattr(visual, 'pool_type', 'tok') != 'tok' \
                or getattr(visual, 'final_ln_after_pool', False):
            raise NotImplementedError(
                f"CLIP '{self.model_name}': only class-token pooled ViTs are supported.")
        _check_blocks(visual.transformer.resblocks, 'image', self.model_name)

    def _check_images(self, images: torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('images must be [N, 3, H, W], already normalised with CLIP mean/std '
                             f'(CLIPModel.image_mean/image_std), got {tuple(images.shape)}.')

    def _visual_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Positional embeddings for a grid_h x grid_w patch grid (bicubic when resized)."""
        visual = self.model.visual
        pos = visual.positional_embedding
        gh0, gw0 = visual.grid_size
        if (grid_h, grid_w) == (gh0, gw0):
            return pos
        grid = pos[1:].reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(grid_h, grid_w), mode='bicubic',
                             align_corners=False).to(pos.dtype)
        return torch.cat([pos[:1], grid.flatten(2).transpose(1, 2)[0]], dim=0)

    def _visual_tokens(self, images: torch.Tensor, dense_mode: Optional[str] = None):
        """ViT token outputs after the last block [N, 1 + h*w, width], the patch tokens for the
        dense map ([N, h*w, width]; None without ``dense_mode``) and the grid size.

        ``dense_mode='plain'``: the ordinary patch outputs; ``'maskclip'``: the last block's
        value path anchored at the class token (:func:`_value_path_forward`).
        """
        self._check_vit()
        self._check_images(images)
        visual = self.model.visual
        x = visual.conv1(images.to(self.device))
        n, width, grid_h, grid_w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, width).expand(n, 1, width)
        x = torch.cat([cls, x], dim=1) + self._visual_pos_embed(grid_h, grid_w).to(x.dtype)
        x = visual.ln_pre(x)
        blocks = visual.transformer.resblocks
        dense = None
        for i, block in enumerate(blocks):
            if dense_mode == 'maskclip' and i == len(blocks) - 1:
                dense = _value_path_forward(block, x[:, 1:], x[:, 0])
            x = _block_forward(block, x, causal=False)
        if dense_mode == 'plain':
            dense = x[:, 1:]
        return x, dense, (grid_h, grid_w)

    def _visual_project(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        x = visual.ln_post(x)
        return x @ visual.proj if visual.proj is not None else x

    def _dense_map(self, tokens: torch.Tensor, grid, normalize: bool) -> torch.Tensor:
        feat = self._visual_project(tokens)
        if normalize:
            feat = F.normalize(feat, dim=-1)
        return feat.transpose(1, 2).reshape(feat.shape[0], feat.shape[2], *grid)

    def encode_image(self, images: torch.Tensor, normalize: bool = True,
                     dense_mode: Optional[str] = None):
        """Global image embedding [N, embed_dim] of CLIP-normalised images [N, 3, S, S].

        With ``dense_mode`` (see :meth:`encode_image_dense`) also the dense map from the same
        pass: ``(global, dense)``, the dense map never normalised.
        """
        if dense_mode is not None:
            _check_dense_mode(dense_mode)
        tokens, dense, grid = self._visual_tokens(images, dense_mode)
        feat = self._visual_project(tokens[:, 0])
        feat = F.normalize(feat, dim=-1) if normalize and feat.shape[0] else feat
        if dense_mode is None:
            return feat
        return feat, self._dense_map(dense, grid, False)

    def encode_image_dense(self, images: torch.Tensor, normalize: bool = False,
                           mode: str = 'plain') -> torch.Tensor:
        """Projected patch tokens as a map [N, embed_dim, H/patch, W/patch] for roi_align.

        Each patch token goes through ln_post and the image projection like the class token, so
        pooled regions live in the image-text embedding space. ``mode='plain'``: the ViT's patch
        outputs; ``'maskclip'``: the last block's value path anchored at the class token (each
        patch keeps its own content instead of the attention mix, as in MaskCLIP and BARON's
        reference). Inputs of another size than ``image_size`` get bicubically resized
        positional embeddings. Not normalised by default.
        """
        _check_dense_mode(mode)
        _, dense, grid = self._visual_tokens(images, mode)
        return self._dense_map(dense, grid, normalize)

    def extra_repr(self) -> str:
        return (f"model_name='{self.model_name}', text_width={self.text_width}, "
                f'embed_dim={self.embed_dim}, image_size={self.image_size}, frozen')
