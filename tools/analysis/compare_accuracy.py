"""Layer-by-layer accuracy comparison of a model in two settings (fp32 / fp16 / bf16 / CUDA /
ONNX Runtime): dump, compare, report, advise. See ``--help`` and ovkit/accuracy/.

    python tools/analysis/compare_accuracy.py run CONFIG [CKPT] --input FILE \
        --settings fp32,bf16 --out DIR
    python tools/analysis/compare_accuracy.py dump CONFIG [CKPT] --input FILE \
        --setting fp16 --out DIR
    python tools/analysis/compare_accuracy.py compare DIR_A DIR_B --out REPORT_DIR
"""
import sys

from ovkit.accuracy.cli import main

if __name__ == '__main__':
    sys.exit(main())
