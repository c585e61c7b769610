"""Vision Transformer backbone with timm's parameter names, registered in mmpretrain.

mmpretrain's own ``VisionTransformer`` names its parameters differently (``layers.i.ln1``,
``ffn.layers.0.0``...), so timm/JAX weights need a converter there. ``OVKitViT`` keeps timm's
names (``blocks.i.norm1``, ``attn.qkv``, ``mlp.fc1``...), so ``model.backbone`` loads a timm
state dict as it is (minus ``head``/``head_dist``, which live in :class:`OVKitViTClsHead`).
Written by hand because no host library has a ViT with these names; the drop path is mmcv's.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.registry import MODELS

from .pos_embed import resample_abs_pos_embed

# name -> (embed_dim, depth, num_heads, default patch size); timm's vit_* definitions.
ARCHS = {
    'tiny': (192, 12, 3, 16),
    'small': (384, 12, 6, 16),
    'base': (768, 12, 12, 16),
    'large': (1024, 24, 16, 16),
    'huge': (1280, 32, 16, 14),
}
OUT_TYPES = ('pre_logits', 'cls_token', 'avg_featmap', 'featmap', 'raw')


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution (timm's ``patch_embed.proj``).

    Args:
        patch_size: side of a square patch.
        in_chans: input channels.
        embed_dim: output channels.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), x.shape[-2:]


class Attention(nn.Module):
    """Multi-head self-attention, timm names (``qkv`` rows are q|k|v, ``proj``).

    Args:
        dim: token width.
        num_heads: attention heads.
        qkv_bias: bias on the qkv projection.
        attn_drop: dropout on attention weights.
        proj_drop: dropout after ``proj``.
        fused_attn: use ``F.scaled_dot_product_attention``; False computes softmax(qk^T)v
            explicitly (timm's ``TIMM_FUSED_ATTN=0`` path, for bit-level comparisons).
    """

    def __init__(self, dim, num_heads, qkv_bias=True, attn_drop=0., proj_drop=0.,
                 fused_attn=True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed_dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """``fc1`` -> GELU (erf) -> ``fc2``, timm names.

    Args:
        dim: token width.
        hidden: hidden width.
        drop: dropout after each linear.
    """

    def __init__(self, dim, hidden, drop=0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x):
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x += dp(attn(norm1 x)); x += dp(mlp(norm2 x))``.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        qkv_bias: bias on the qkv projection.
        drop: dropout after attention/MLP projections.
        attn_drop: dropout on attention weights.
        drop_path: stochastic-depth rate of this block.
        eps: LayerNorm epsilon (timm: 1e-6).
        fused_attn: see :class:`Attention`.
    """

    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=True, drop=0., attn_drop=0.,
                 drop_path=0., eps=1e-6, fused_attn=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, fused_attn)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


@MODELS.register_module()
class OVKitViT(BaseModule):
    """ViT / DeiT backbone whose ``state_dict`` keys are timm's.

    Output (a tuple with one entry per ``out_indices``, the mmpretrain convention):

    - ``'pre_logits'``: timm's ``forward_head(pre_logits=True)``: pooled by ``global_pool``
      (``'token'``: class token after ``norm``; ``'avg'``: patch-token mean then ``fc_norm``),
      then the in21k representation layer (``pre_logits.fc`` + tanh) when
      ``representation_size`` is set. A distilled model gives ``(cls, dist)`` tokens.
    - ``'cls_token'`` ``[B, D]``; ``'avg_featmap'`` patch mean through ``fc_norm`` ``[B, D]``;
      ``'featmap'`` patch tokens ``[B, D, h, w]``; ``'raw'`` all tokens ``[B, L, D]``.

    The final ``norm`` applies to the last block's output only (as in timm).

    Args:
        arch: 'tiny', 'small', 'base', 'large', 'huge' or a dict with embed_dim, depth, num_heads.
        img_size: training/eval image side (or ``(h, w)``); sets the position grid.
        patch_size: patch side; None takes the arch's (16, huge 14).
        in_chans: input channels.
        global_pool: 'token' (class token) or 'avg' (timm: mean of patch tokens, then fc_norm).
        class_token: prepend a class token (required for 'token' pooling).
        distilled: DeiT distillation token after the class token.
        representation_size: width of the in21k ``pre_logits`` layer (Linear+Tanh); None: none.
        mlp_ratio: MLP hidden width / embed_dim.
        qkv_bias: bias on the qkv projection.
        drop_rate: dropout after attention/MLP projections.
        pos_drop_rate: dropout after adding the position embedding.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, linearly increasing to this rate over the blocks.
        norm_eps: LayerNorm epsilon (1e-6 as timm and JAX; torch's default is 1e-5).
        final_norm: apply ``norm``/``fc_norm`` at all.
        fc_norm: norm after pooling instead of before; None: only with 'avg' pooling (timm).
        fused_attn: ``F.scaled_dot_product_attention`` (True) or explicit softmax.
        dynamic_img_size: accept other input sizes by resampling ``pos_embed`` each forward.
        out_type: one of ``OUT_TYPES`` (see above).
        out_indices: blocks whose output is returned (negative counts from the end).
        with_cp: gradient checkpointing per block (saves memory, costs a recompute).
        pretrained: local weights file (timm .pth/.safetensors, JAX .npz, mmpretrain or ovkit
            checkpoint) loaded by ``init_weights``; heads are dropped, ``pos_embed`` resampled.
        init_cfg: mmengine init config, applied after timm's initialisation.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: Optional[int] = None,
                 in_chans: int = 3,
                 global_pool: str = 'token',
                 class_token: bool = True,
                 distilled: bool = False,
                 representation_size: Optional[int] = None,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 pos_drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-6,
                 final_norm: bool = True,
                 fc_norm: Optional[bool] = None,
                 fused_attn: bool = True,
                 dynamic_img_size: bool = False,
                 out_type: str = 'pre_logits',
                 out_indices: Union[int, Sequence[int]] = -1,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in ARCHS:
                raise ValueError(f'OVKitViT: arch={arch!r} is not one of {sorted(ARCHS)}; '
                                 'or pass a dict(embed_dim=, depth=, num_heads=)')
            embed_dim, depth, num_heads, default_patch = ARCHS[arch]
        else:
            missing = {'embed_dim', 'depth', 'num_heads'} - set(arch)
            if missing:
                raise ValueError(f'OVKitViT: arch dict lacks {sorted(missing)}')
            embed_dim, depth, num_heads = arch['embed_dim'], arch['depth'], arch['num_heads']
            default_patch = arch.get('patch_size', 16)
        if global_pool not in ('token', 'avg'):
            raise ValueError(f"OVKitViT: global_pool={global_pool!r}; use 'token' or 'avg'")
        if global_pool == 'token' and not class_token:
            raise ValueError("OVKitViT: global_pool='token' needs class_token=True")
        if distilled and (global_pool != 'token' or not class_token):
            raise ValueError("OVKitViT: distilled=True reads the class and distillation tokens; "
                             "use global_pool='token', class_token=True")
        if out_type not in OUT_TYPES:
            raise ValueError(f'OVKitViT: out_type={out_type!r} is not one of {OUT_TYPES}')
        if out_type == 'cls_token' and not class_token:
            raise ValueError("OVKitViT: out_type='cls_token' needs class_token=True")

        self.patch_size = patch_size or default_patch
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(s % self.patch_size for s in self.img_size):
            raise ValueError(f'OVKitViT: img_size {self.img_size} is not a multiple of '
                             f'patch_size {self.patch_size}')
        self.grid_size = tuple(s // self.patch_size for s in self.img_size)
        self.embed_dim = self.num_features = embed_dim
        self.depth = depth
        self.global_pool = global_pool
        self.distilled = distilled
        self.num_prefix_tokens = int(class_token) + int(distilled)
        self.dynamic_img_size = dynamic_img_size
        self.out_type = out_type
        self.with_cp = with_cp
        self.pretrained = pretrained
        indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        self.out_indices = sorted(i % depth for i in indices)

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # timm's linspace
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i],
                  norm_eps, fused_attn) for i in range(depth)
        ])
        use_fc_norm = global_pool == 'avg' if fc_norm is None else fc_norm
        self.norm = (nn.LayerNorm(embed_dim, eps=norm_eps)
                     if final_norm and not use_fc_norm else nn.Identity())
        self.fc_norm = (nn.LayerNorm(embed_dim, eps=norm_eps)
                        if final_norm and use_fc_norm else nn.Identity())
        if representation_size:
            self.pre_logits = nn.Sequential()
            self.pre_logits.add_module('fc', nn.Linear(embed_dim, representation_size))
            self.pre_logits.add_module('act', nn.Tanh())
            self.num_features = representation_size
        else:
            self.pre_logits = nn.Identity()

    @property
    def fused_attn(self) -> bool:
        return all(b.attn.fused_attn for b in self.blocks)

    @fused_attn.setter
    def fused_attn(self, value: bool):
        for b in self.blocks:
            b.attn.fused_attn = bool(value)

    # ----------------------------------------------------------------- weights
    def init_weights(self):
        """timm's initialisation, then the mmengine ``init_cfg`` and ``pretrained`` if set."""
        trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            trunc_normal_(self.dist_token, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:  # qkv_bias=False: the qkv projection has none
                    nn.init.zeros_(m.bias)
        if self.init_cfg is not None:
            super().init_weights()
        if self.pretrained:
            from .weights import load_backbone_weights
            load_backbone_weights(self, self.pretrained, key='model.backbone.pretrained')

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Resample a ``pos_embed`` trained at another size (timm's checkpoint filter)."""
        key = prefix + 'pos_embed'
        if key in state_dict and state_dict[key].shape != self.pos_embed.shape:
            state_dict[key] = resample_abs_pos_embed(
                state_dict[key], self.grid_size, num_prefix_tokens=self.num_prefix_tokens)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get_layer_depth(self, param_name: str, prefix: str = ''):
        """Layer id for mmpretrain's layer-wise lr decay (embeddings 0, block i -> i+1).

        Args:
            param_name: parameter name.
            prefix: prefix of this backbone's parameters in ``param_name``.
        """
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers  # e.g. the head: last group
        name = param_name[len(prefix):]
        if name.startswith(('cls_token', 'dist_token', 'pos_embed', 'patch_embed')):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    # ----------------------------------------------------------------- forward
    def _pos_embed(self, x, grid):
        tokens = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.dist_token)
                  if t is not None]
        pos_embed = self.pos_embed
        if tuple(grid) != self.grid_size:
            if not self.dynamic_img_size:
                size = tuple(g * self.patch_size for g in grid)
                raise ValueError(
                    f'OVKitViT: input {size} differs from img_size {self.img_size}; set '
                    'img_size to the input size (the checkpoint pos_embed is resampled at load '
                    'time) or dynamic_img_size=True to resample every forward')
            pos_embed = resample_abs_pos_embed(pos_embed, grid, self.grid_size,
                                               self.num_prefix_tokens)
        if tokens:
            x = torch.cat(tokens + [x], dim=1)
        return self.pos_drop(x + pos_embed)

    def forward_features(self, x):
        """Tokens after the blocks (and ``norm``), as timm's ``forward_features``.

        Args:
            x: images ``[B, C, H, W]``.
        """
        return self._run(x)[0][-1]

    def _run(self, x):
        x, grid = self.patch_embed(x)
        x = self._pos_embed(x, grid)
        outs = []
        for i, block in enumerate(self.blocks):
            if self.with_cp and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i == self.depth - 1:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(x)
        return outs, grid

    def _format(self, x, grid):
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patches = x[:, self.num_prefix_tokens:]
        if self.out_type == 'featmap':
            return patches.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        if self.out_type == 'avg_featmap':
            return self.fc_norm(patches.mean(dim=1))
        # 'pre_logits': timm's pool -> fc_norm (-> legacy representation layer)
        if self.distilled:
            return self.pre_logits(x[:, 0]), self.pre_logits(x[:, 1])
        pooled = x[:, 0] if self.global_pool == 'token' else patches.mean(dim=1)
        return self.pre_logits(self.fc_norm(pooled))

    def forward(self, x):
        """Args:
            x: images ``[B, C, H, W]``, normalised as the weights expect.
        """
        outs, grid = self._run(x)
        return tuple(self._format(o, grid) for o in outs)


def vit_flops(backbone: OVKitViT, batch: int = 1, num_classes: int = 0) -> float:
    """Multiply-adds x2 of one forward (matmuls and the patch conv; norms etc. ignored).

    Args:
        backbone: the model whose sizes are used.
        batch: images.
        num_classes: classifier width (0: no head).
    """
    d = backbone.embed_dim
    n = backbone.pos_embed.shape[1]
    hidden = backbone.blocks[0].mlp.fc1.out_features
    per_block = 2 * n * d * (3 * d + d + 2 * hidden) + 2 * 2 * n * n * d
    patch = 2 * (n - backbone.num_prefix_tokens) * d * 3 * backbone.patch_size**2
    head = 2 * d * num_classes * (2 if backbone.distilled else 1)
    return float(batch * (backbone.depth * per_block + patch + head))


__all__ = ['OVKitViT', 'ARCHS', 'OUT_TYPES', 'vit_flops']
