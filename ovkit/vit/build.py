"""Build a config's model exactly as mmengine's Runner does, outside a Runner.

OpenMMLab configs may put ``data_preprocessor`` (mean/std, BGR->RGB) at the top level instead
of inside ``model`` (mmpretrain's ImageNet dataset bases do, and so do ovkit's ImageNet
configs). The Runner merges it into the model config (``model.setdefault('data_preprocessor',
cfg.data_preprocessor)``); building ``cfg.model`` alone silently drops the normalisation.
Every ovkit code path that builds a model from a config without a Runner (``predict.py``, the
tests) goes through :func:`build_model` so that it cannot happen.
"""
import copy


def model_config(cfg) -> dict:
    """``cfg.model`` with a top-level ``data_preprocessor`` merged in, as the Runner does.

    Args:
        cfg: an mmengine Config (or dict) with ``model`` and maybe ``data_preprocessor``.
    """
    model = copy.deepcopy(cfg['model'])
    preprocessor = cfg.get('data_preprocessor')
    if isinstance(model, dict) and preprocessor is not None:
        # Runner.__init__: a model's own data_preprocessor wins over the top-level one
        model.setdefault('data_preprocessor', copy.deepcopy(preprocessor))
    return model


def build_model(cfg):
    """Build ``cfg``'s model under its ``default_scope`` (mmengine's Runner.build_model).

    Args:
        cfg: an mmengine Config (or dict) with ``model`` and maybe ``data_preprocessor``.
    """
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    return MODELS.build(model_config(cfg))
