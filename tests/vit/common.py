"""Shared helpers for the ViT tests: timm reference models and ovkit classifiers."""
import torch

# family -> (patch, embed_dim, num_heads) of B/16, B/32, L/16, L/32, H/14 (timm vit_* defs)
FAMILIES = {
    'B/16': (16, 768, 12),
    'B/32': (32, 768, 12),
    'L/16': (16, 1024, 16),
    'L/32': (32, 1024, 16),
    'H/14': (14, 1280, 16),
}


def perturb(model, seed=0, std=.02):
    """Move every parameter off its init (LayerNorms 1/0 included) so a swapped name shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def timm_fused(model, fused):
    """Switch timm's attention between SDPA and the explicit softmax path."""
    for m in model.modules():
        if hasattr(m, 'fused_attn'):
            m.fused_attn = fused
    return model


def ovkit_classifier(num_classes, mean=(127.5, ) * 3, std=(127.5, ) * 3, head=None, init=True,
                     **backbone):
    """An mmpretrain ImageClassifier with OVKitViT + OVKitViTClsHead, built by the registry.

    ``init=False`` skips the weight init (the caller loads a state dict anyway).
    """
    from mmpretrain.registry import MODELS

    import ovkit.vit  # noqa: F401  (registers)
    distilled = backbone.get('distilled', False)
    cfg = dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=list(mean), std=list(std),
                               to_rgb=True),
        backbone=dict(type='OVKitViT', **backbone),
        head=dict(type='OVKitViTClsHead', num_classes=num_classes, distilled=distilled,
                  in_channels=backbone.get('representation_size') or _width(backbone),
                  **(head or {})))
    from mmengine.registry import DefaultScope
    # An earlier test (or Runner) may have left another default scope, whose registry mmengine
    # would then build from.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    if init:
        model.init_weights()
    return model.eval()


def _width(backbone):
    from ovkit.vit import ARCHS
    arch = backbone.get('arch', 'base')
    return arch['embed_dim'] if isinstance(arch, dict) else ARCHS[arch][0]


def logits(model, x):
    """Classifier scores of already-normalised images (data preprocessor bypassed)."""
    with torch.no_grad():
        return model(x, mode='tensor')


def single_thread():
    """Context for tests of small models: on 2 shared cores thread hand-offs cost more than
    they save (measured: 48 s -> 1.3 s for a 30-step tiny training under load)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
    return ctx()
