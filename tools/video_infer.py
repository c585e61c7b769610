"""Top-5 action labels (names and scores) for a video or a folder of videos.

    python tools/video_infer.py CONFIG CHECKPOINT VIDEO_OR_FOLDER [--topk 5] [--label-map F]
"""
from ovkit.pptsm.video_infer import main

if __name__ == '__main__':
    main()
