"""`custom_imports=dict(imports=['ovkit'])` in a plain mmdet config."""
import subprocess
import sys
import textwrap


def test_plain_mmdet_config_with_ovkit_custom_import(tmp_path):
    cfg = tmp_path / 'user_cfg.py'
    cfg.write_text(textwrap.dedent("""
        _base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'
        default_scope = 'mmdet'
        custom_imports = dict(imports=['ovkit'], allow_failed_imports=False)
        model = dict(backbone=dict(depth=18, init_cfg=None),
                     neck=dict(in_channels=[64, 128, 256, 512]))
    """))
    code = textwrap.dedent(f"""
        import sys
        from mmengine.config import Config
        assert 'ovkit' not in sys.modules
        cfg = Config.fromfile({str(cfg)!r})
        assert 'ovkit' in sys.modules, 'custom_imports did not import ovkit'
        import torch
        from mmengine.logging import HistoryBuffer
        assert HistoryBuffer in torch.serialization.get_safe_globals()
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules()
        model = MODELS.build(cfg.model)
        print(type(model).__name__)
    """)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith('FasterRCNN')
