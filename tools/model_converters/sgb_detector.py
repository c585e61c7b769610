"""SGB's pretrained Faster R-CNN (maskrcnn-benchmark) -> mmdet state dict.

See ``ovkit/sgg/convert_sgb_detector.py``; usage:
    python tools/model_converters/sgb_detector.py model_final.pth vg150_faster_rcnn_x101.pth
"""
from ovkit.sgg.convert_sgb_detector import main

if __name__ == '__main__':
    main()
