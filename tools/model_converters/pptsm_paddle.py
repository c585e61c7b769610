"""Convert PaddleVideo PP-TSM / ResNet-vd .pdparams weights into an mmaction2 checkpoint.

    python tools/model_converters/pptsm_paddle.py IN.pdparams OUT.pth [--backbone-only]
"""
from ovkit.pptsm.convert import main

if __name__ == '__main__':
    main()
