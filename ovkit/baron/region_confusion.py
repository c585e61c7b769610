"""What a BARON detector calls the ground-truth boxes and the empty background of a COCO-style
validation set: the classification alone, apart from proposals, box regression and ranking.

    python tools/analysis/baron_region_confusion.py CONFIG CHECKPOINT [--num-images 40]

For each ground-truth box: the argmax over the classes + background of the head's scores on
that box. For ``--bg-per-image`` random square windows per image that overlap no ground-truth
box: the same argmax, and the mean cosine of those windows' region embeddings with each class
embedding and the background embedding (``region_cosines``: the box head's own embedding, also
for an ensemble head, whose scores are combined probabilities). On shapes this separates the
two ways a novel class fails: its own boxes named as another class, or background named as it
(which fills the detections with high-scoring false positives even when every novel box is
named right). Run from the directory the config's relative paths are written for.
"""
import argparse
import json
import os.path as osp
from collections import Counter
from typing import Optional

import numpy as np
import torch

__all__ = ['region_confusion', 'main']


def _overlaps(box, boxes):
    return any(min(box[2], b[2]) > max(box[0], b[0]) and min(box[3], b[3]) > max(box[1], b[1])
               for b in boxes)


def region_confusion(config: str, checkpoint: str, num_images: int = 40,
                     bg_per_image: int = 6, seed: int = 0, ann_file: Optional[str] = None,
                     img_prefix: Optional[str] = None, device: str = 'cpu') -> dict:
    """Returns ``dict(classes, gt={(true, predicted): count}, bg={predicted: count},
    bg_mean_cos=[num_classes + 1])``; names, with ``'background'`` for the last column."""
    from mmcv.transforms import Compose
    from mmdet.apis import init_detector
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    if ann_file is None or img_prefix is None:
        ds = cfg.test_dataloader.dataset
        ann_file = ann_file or osp.join(ds.get('data_root', ''), ds.ann_file)
        img_prefix = img_prefix or osp.join(ds.get('data_root', ''), ds.data_prefix['img'])
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file {ann_file} not found (from the config\'s '
                                'test_dataloader, relative to the working directory); pass '
                                '--ann-file or run where the config expects its data.')
    model = init_detector(cfg, checkpoint, device=device)
    head = model.roi_head.bbox_head
    classes = list(model.dataset_meta['classes']) + ['background']
    # the reported classes and the background, which comes last (after any extra test classes)
    cols = list(range(len(classes) - 1)) + [-1]
    pipeline = Compose(get_test_pipeline_cfg(cfg))
    ann = json.load(open(ann_file))
    cat_name = {c['id']: c['name'] for c in ann['categories']}
    by_image = {}
    for a in ann['annotations']:
        by_image.setdefault(a['image_id'], []).append(a)
    rng = np.random.default_rng(seed)
    gt, bg, bg_cos = Counter(), Counter(), []
    for info in ann['images'][:num_images]:
        data = pipeline(dict(img_path=osp.join(img_prefix, info['file_name']),
                             img_id=info['id']))
        batch = model.data_preprocessor(dict(inputs=[data['inputs']],
                                             data_samples=[data['data_samples']]), False)
        sx, sy = data['data_samples'].metainfo['scale_factor'][:2]
        anns = by_image.get(info['id'], [])
        gts = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                a['bbox'][1] + a['bbox'][3]] for a in anns]
        w, h = info['width'], info['height']
        side_lo, side_hi = 0.08 * min(w, h), 0.3 * min(w, h)
        windows = []
        for _ in range(200 * bg_per_image):
            if len(windows) == bg_per_image:
                break
            s = rng.uniform(side_lo, side_hi)
            x, y = rng.uniform(0, w - s), rng.uniform(0, h - s)
            if not _overlaps([x, y, x + s, y + s], gts):
                windows.append([x, y, x + s, y + s])
        boxes = torch.tensor(gts + windows, dtype=torch.float32).view(-1, 4)
        boxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1).to(device)
        with torch.no_grad():
            out = model.roi_head._bbox_forward(model.extract_feat(batch['inputs']), rois)
            scores = out['cls_score'][:, cols]  # what prediction ranks
            cosines = head.region_cosines(out['bbox_feats'])[:, cols]
        pred = scores.argmax(1).tolist()
        for a, p in zip(anns, pred):
            gt[(cat_name[a['category_id']], classes[p])] += 1
        for i in range(len(gts), len(pred)):
            bg[classes[pred[i]]] += 1
            bg_cos.append(cosines[i].cpu().numpy())
    cos = np.mean(bg_cos, 0).tolist() if bg_cos else []
    return dict(classes=classes, gt=dict(gt), bg=dict(bg), bg_mean_cos=cos)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--num-images', type=int, default=40)
    p.add_argument('--bg-per-image', type=int, default=6)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--ann-file', help="default: the config's test annotation file")
    p.add_argument('--img-prefix', help="default: the config's test image folder")
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    for name in ('num_images', 'bg_per_image'):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            p.error(f'{what} {path} not found')
    res = region_confusion(args.config, args.checkpoint, args.num_images, args.bg_per_image,
                           args.seed, args.ann_file, args.img_prefix, args.device)
    print('ground-truth boxes, true -> predicted (argmax over classes + background):')
    for true in res['classes'][:-1]:
        row = {p: n for (t, p), n in res['gt'].items() if t == true}
        if row:
            print(f'  {true:12s} ' + ', '.join(f'{p} {n}' for p, n in
                                              sorted(row.items(), key=lambda kv: -kv[1])))
    total = sum(res['bg'].values())
    print(f'{total} background windows -> ' + ', '.join(
        f'{p} {n}' for p, n in sorted(res['bg'].items(), key=lambda kv: -kv[1])))
    if res['bg_mean_cos']:
        print('their mean cosine with each embedding: ' + ', '.join(
            f'{c} {v:.2f}' for c, v in zip(res['classes'], res['bg_mean_cos'])))
    return res


if __name__ == '__main__':
    main()
