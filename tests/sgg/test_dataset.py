"""VGSGGDataset on generated VG150-format files: boxes, splits, filters, errors, pipeline."""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData

import ovkit.sgg  # noqa: F401  (registers)
from ovkit.sgg.dataset import VGSGGDataset, sample_one_predicate_per_pair
from tests.sgg.vg_fixture import write_vg

# image 10: 2048 x 1024 (scale 2); box 0 = cx 100, cy 50, w 41, h 20 at 1024
IMAGES = [
    dict(image_id=10, width=2048, height=1024, split=0,
         boxes=[[100, 50, 41, 20], [1020, 500, 10, 40], [120, 60, 100, 100]],
         labels=[1, 2, 3], rels=[[0, 1, 1], [0, 1, 2], [0, 1, 3], [2, 0, 2]]),
    dict(image_id=11, width=100, height=200, split=0, boxes=[[50, 50, 20, 20]], labels=[2]),
    dict(image_id=12, width=100, height=100, split=0),                       # no boxes
    dict(image_id=13, width=100, height=100, split=0, boxes=[[100, 100, 50, 50],
                                                           [900, 900, 50, 50]],
         labels=[1, 1], rels=[[0, 1, 1]]),                                  # no overlap
    dict(image_id=14, width=300, height=300, split=0, boxes=[[200, 200, 100, 100],
                                                           [250, 250, 100, 100]],
         labels=[3, 1], rels=[[1, 0, 2], [0, 1, 1]]),
    dict(image_id=20, width=100, height=100, split=2, boxes=[[500, 500, 100, 100],
                                                           [520, 520, 100, 100]],
         labels=[1, 2], rels=[[0, 1, 1], [0, 1, 1], [0, 1, 2]]),           # test duplicates
    dict(image_id=21, width=100, height=100, split=2, boxes=[[500, 500, 100, 100]],
         labels=[3]),
]


@pytest.fixture
def vg_root(tmp_path):
    return write_vg(str(tmp_path / 'vg'), IMAGES)


def build(root, **kw):
    kw.setdefault('split', 'train')
    # mmengine's serialisation runs gc.collect() (~1 s in a process holding torch and mmdet);
    # the tests read data_infos, which serialisation does not change
    kw.setdefault('serialize_data', False)
    return VGSGGDataset(data_root=root, num_val_im=kw.pop('num_val_im', 0), **kw)


def ids(ds):
    return [ds.get_data_info(i)['img_id'] for i in range(len(ds))]


def test_box_conversion_follows_sgb(vg_root):
    info = build(vg_root, split='train', filter_duplicate_rels=False).get_data_info(0)
    assert info['img_id'] == 10 and (info['width'], info['height']) == (2048, 1024)
    boxes = np.array([ins['bbox'] for ins in info['instances']])
    # int32 h5: x1 = int(100 - 20.5) = 79, x2 = 79 + 41 = 120, y1 = 40, y2 = 60; x2
    # (1024 scale) times max(W, H) / 1024 = 2
    np.testing.assert_allclose(boxes[0], [158, 80, 240, 120])
    # box 1: x1 = 1015, x2 = 1025 -> 2030, 2050 -> clipped to W - 1 = 2047; y 480..520 x 2
    np.testing.assert_allclose(boxes[1], [2030, 960, 2047, 1023])
    assert [ins['bbox_label'] for ins in info['instances']] == [0, 1, 2]
    assert info['relations'].dtype == np.int64
    np.testing.assert_array_equal(info['relations'], IMAGES[0]['rels'])
    assert info['img_path'] == osp.join(vg_root, 'VG_100K', '10.jpg')


def test_float_h5_boxes_are_not_truncated(tmp_path):
    root = write_vg(str(tmp_path / 'vgf'), IMAGES, box_dtype=np.float32)
    info = build(root, filter_duplicate_rels=False).get_data_info(0)
    np.testing.assert_allclose(info['instances'][0]['bbox'], [159, 80, 241, 120])


def test_metainfo_from_dict_file(vg_root):
    ds = build(vg_root)
    assert ds.metainfo['classes'] == ('cat', 'dog', 'tree')
    assert ds.metainfo['predicates'] == ('__background__', 'on', 'near', 'has')
    with pytest.raises(ValueError, match='metainfo.classes differs'):
        build(vg_root, metainfo=dict(classes=('a', 'b', 'c')))


def test_splits_and_filters(vg_root):
    def splits(**kw):                        # images are not under test here
        return ids(build(vg_root, check_images=False, **kw))

    # split 0 with boxes and relations: 10, 13, 14 (11 has no relation, 12 no box)
    assert splits(split='train') == [10, 13, 14]
    assert splits(split='val', num_val_im=2) == [10, 13]
    assert splits(split='train', num_val_im=2) == [14]
    assert splits(split='test', num_val_im=2) == [20]
    assert splits(split='test', filter_empty_rels=False) == [20, 21]
    assert splits(split='train', filter_empty_rels=False) == [10, 11, 13, 14]
    assert splits(split='train', num_im=2) == [10, 13]
    # val is cut before the overlap filter (13 has no overlapping pair: dropped from train)
    assert splits(split='train', filter_non_overlap=True) == [10, 14]
    assert splits(split='val', num_val_im=2, filter_non_overlap=True) == [10, 13]
    assert splits(split='train', num_val_im=2, filter_non_overlap=True) == [14]
    # image 10 at 1024: box 0 = [79,40,120,60], 1 = [1015,480,1025,520], 2 = [70,10,170,110]:
    # only the pair (2, 0) overlaps
    ds = build(vg_root, split='train', filter_non_overlap=True, filter_duplicate_rels=False,
               check_images=False)
    np.testing.assert_array_equal(ds.get_data_info(0)['relations'], [[2, 0, 2]])


def test_non_overlap_filter_uses_plus_one_iou(tmp_path):
    # boxes [0,0,10,10] and [10,0,20,10] at 1024 touch: they overlap only with the +1 convention
    imgs = [dict(image_id=1, width=1024, height=1024, split=0,
                 boxes=[[5, 5, 10, 10], [15, 5, 10, 10], [600, 600, 10, 10]],
                 labels=[1, 2, 3], rels=[[0, 1, 1], [0, 2, 2]])]
    root = write_vg(str(tmp_path / 'ov'), imgs)
    ds = build(root, filter_non_overlap=True, filter_duplicate_rels=False)
    np.testing.assert_array_equal(ds.get_data_info(0)['relations'], [[0, 1, 1]])
    # the test split never applies it
    imgs[0]['split'] = 2
    root = write_vg(str(tmp_path / 'ov2'), imgs)
    assert len(build(root, split='test', filter_non_overlap=True).get_data_info(0)
               ['relations']) == 2


def test_train_draws_one_predicate_per_pair_test_keeps_duplicates(vg_root):
    train = build(vg_root, split='train')
    seen = set()
    for _ in range(60):
        rels = train.get_data_info(0)['relations']
        assert len(rels) == 2                          # pairs (0,1) and (2,0)
        assert rels[0, :2].tolist() == [0, 1] and rels[1].tolist() == [2, 0, 2]
        seen.add(int(rels[0, 2]))
    assert seen == {1, 2, 3}                           # every predicate of the pair drawn
    test = build(vg_root, split='test')
    np.testing.assert_array_equal(test.get_data_info(0)['relations'],
                                  [[0, 1, 1], [0, 1, 1], [0, 1, 2]])


def test_sample_one_predicate_per_pair_is_uniform():
    rels = np.array([[0, 1, 1], [2, 3, 5], [0, 1, 2], [0, 1, 3], [0, 1, 3]])
    rng = np.random.default_rng(0)
    draws = [sample_one_predicate_per_pair(rels, rng) for _ in range(3000)]
    assert all(d[:, :2].tolist() == [[0, 1], [2, 3]] for d in draws)
    freq = np.bincount([d[0, 2] for d in draws], minlength=4)[1:] / 3000
    np.testing.assert_allclose(freq, [0.25, 0.25, 0.5], atol=0.04)


def test_train_drops_boxes_emptied_by_clipping(tmp_path):
    # box 1 lies right of the 100 px wide image: clipped to zero width
    imgs = [dict(image_id=1, width=100, height=100, split=0,
                 boxes=[[300, 300, 100, 100], [1100, 300, 50, 50], [500, 500, 100, 100]],
                 labels=[1, 2, 3], rels=[[0, 1, 1], [2, 0, 2], [1, 2, 3]])]
    root = write_vg(str(tmp_path / 'clip'), imgs)
    info = build(root, filter_duplicate_rels=False).get_data_info(0)
    assert [i['bbox_label'] for i in info['instances']] == [0, 2]
    np.testing.assert_array_equal(info['relations'], [[1, 0, 2]])
    imgs[0]['split'] = 2
    root = write_vg(str(tmp_path / 'clip2'), imgs)
    assert len(build(root, split='test').get_data_info(0)['instances']) == 3


def test_missing_images_are_one_clear_error(vg_root):
    os.remove(osp.join(vg_root, 'VG_100K', '13.jpg'))
    os.remove(osp.join(vg_root, 'VG_100K', '14.jpg'))
    with pytest.raises(FileNotFoundError) as e:
        build(vg_root, split='train')
    msg = str(e.value)
    assert '2 of 3 images are missing' in msg
    assert osp.join(vg_root, 'VG_100K', '13.jpg') in msg
    assert 'images.zip' in msg and 'data_prefix' in msg
    assert ids(build(vg_root, split='test')) == [20]    # other splits still load
    assert len(build(vg_root, split='train', check_images=False)) == 3


def test_a_few_missing_training_images_are_left_to_the_skip_counter(vg_root, monkeypatch):
    import ovkit.sgg.dataset as dataset_module
    logged = []
    monkeypatch.setattr(dataset_module, 'print_log', lambda msg, **kw: logged.append(msg))
    os.remove(osp.join(vg_root, 'VG_100K', '13.jpg'))
    # 1 of 3 training images: within max_missing_ratio=0.5, a warning (the file is skipped
    # and counted when drawn: tests/sgg/test_skips.py)
    assert ids(build(vg_root, split='train', max_missing_ratio=0.5)) == [10, 13, 14]
    assert '1 of 3 images are missing' in logged[0] and '13.jpg' in logged[0]
    with pytest.raises(FileNotFoundError, match='1 of 3 images .*max_missing_ratio=0.01'):
        build(vg_root, split='train')                    # default 1%
    os.remove(osp.join(vg_root, 'VG_100K', '20.jpg'))
    with pytest.raises(FileNotFoundError, match='1 of 1 images are missing'):
        build(vg_root, split='test', max_missing_ratio=1.0)   # evaluation never skips


def test_missing_files_name_the_config_key(tmp_path, vg_root):
    with pytest.raises(FileNotFoundError, match='dict_file=.*Scene-Graph-Benchmark'):
        VGSGGDataset(data_root=str(tmp_path / 'nowhere'))
    os.remove(osp.join(vg_root, 'VG-SGG-with-attri.h5'))
    with pytest.raises(FileNotFoundError, match='ann_file=.*DATASET.md'):
        build(vg_root)


def test_image_data_with_sgb_corrupted_entries_is_aligned(tmp_path):
    extra = [(1, dict(image_id=1592, width=5, height=5)), (3, dict(image_id=4616, width=5,
                                                                    height=5))]
    root = write_vg(str(tmp_path / 'cor'), IMAGES, image_data_extra=extra)
    assert ids(build(root, split='train')) == [10, 13, 14]
    bad = [(0, dict(image_id=7, width=5, height=5))]
    root = write_vg(str(tmp_path / 'bad'), IMAGES, image_data_extra=bad)
    with pytest.raises(ValueError, match='lists 8 images .* has 7'):
        build(root)


def test_pipeline_packs_relations_and_original_boxes(vg_root):
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    ds = build(vg_root, split='test', pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadSGGAnnotations'),
        dict(type='Resize', scale=(50, 50), keep_ratio=True),
        dict(type='PackSGGInputs')])
    out = ds[0]
    sample = out['data_samples']
    assert tuple(out['inputs'].shape) == (3, 50, 50)
    np.testing.assert_array_equal(sample.gt_relations.pairs.numpy(), [[0, 1], [0, 1], [0, 1]])
    np.testing.assert_array_equal(sample.gt_relations.labels.numpy(), [1, 1, 2])
    ori = np.array([ins['bbox'] for ins in ds.get_data_info(0)['instances']], np.float32)
    np.testing.assert_array_equal(sample.ori_gt_bboxes, ori)
    np.testing.assert_allclose(sample.gt_instances.bboxes.numpy(), ori * 0.5, rtol=1e-6)
    assert sample.gt_instances.labels.tolist() == [0, 1]
    assert sample.sample_idx == 0 and sample.img_id == 20



def test_json_size_differs_from_the_image_file(tmp_path):
    """image_data.json says 100 x 100, the file is 200 x 100 (as for a few VG images). SGB
    builds the GT in the json's frame, resizes it with the image (target.resize(image.size))
    and resizes the predictions back to the json's size before evaluating."""
    from mmengine.registry import init_default_scope

    from ovkit.sgg.metric import SGGMetric
    init_default_scope('mmdet')
    img = dict(IMAGES[5], file_size=(200, 100))
    root = write_vg(str(tmp_path / 'vg'), [img])
    ds = build(root, split='test', pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadSGGAnnotations'),
        dict(type='Resize', scale=(50, 50), keep_ratio=True), dict(type='PackSGGInputs')])
    sample = ds[0]['data_samples']
    json_boxes = np.array([ins['bbox'] for ins in ds.get_data_info(0)['instances']], np.float32)
    assert sample.ann_shape == (100, 100) and sample.ori_shape == (100, 200)
    assert sample.img_shape == (25, 50)
    np.testing.assert_array_equal(sample.ori_gt_bboxes, json_boxes)   # SGB's evaluation GT
    # SGB's target.resize((50, 25)) of the json-frame boxes: x * 50/100, y * 25/100
    np.testing.assert_allclose(sample.gt_instances.bboxes.numpy(),
                               json_boxes * [0.5, 0.25, 0.5, 0.25], rtol=1e-6)
    # an SGDet model that finds the GT boxes (in the resized frame) returns them in the
    # loaded image's pixels (mmdet's rescale); SGB maps them to the json's frame: all match
    sample.pred_instances = InstanceData(
        bboxes=sample.gt_instances.bboxes.tensor / sample.gt_instances.bboxes.tensor.new_tensor(
            sample.scale_factor).repeat(2), labels=sample.gt_instances.labels,
        scores=torch.ones(2))
    scores = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 0.25, 0.125, 0.0]])
    sample.pred_relations = InstanceData(pairs=torch.tensor([[0, 1], [1, 0]]), scores=scores,
                                         labels=torch.tensor([1, 2]))
    metric = SGGMetric(mode='sgdet', topks=(1, 2), plot=False)
    metric.dataset_meta = ds.metainfo
    metric.process({}, [sample])
    res = metric.compute_metrics(metric.results)
    # GT (0,1,p1) x2 and (0,1,p2): the first row (0,1,p1) finds both p1 triplets, the best
    # two (pair, predicate) entries (0,1,p1) (0,1,p2) all three
    assert res['R@1'] == 2 / 3 and res['ngR@2'] == 1.0

def test_pack_rejects_relations_to_dropped_boxes():
    from ovkit.sgg.transforms import PackSGGInputs
    results = dict(img=np.zeros((8, 8, 3), np.uint8), img_id=1, img_path='x.jpg',
                   ori_shape=(8, 8), img_shape=(8, 8), scale_factor=(1., 1.), flip=False,
                   flip_direction=None, gt_bboxes=np.zeros((1, 4), np.float32),
                   gt_bboxes_labels=np.zeros(1, np.int64), gt_ignore_flags=np.zeros(1, bool),
                   gt_relations=np.array([[0, 1, 1]]))
    with pytest.raises(ValueError, match='x.jpg: relations index boxes'):
        PackSGGInputs().transform(results)


@pytest.fixture(scope='module')
def shapes_vg150(tmp_path_factory):
    from ovkit.shapes import make_shapes
    out = tmp_path_factory.mktemp('shapes')
    make_shapes(str(out), seed=0, kinds=['vg150'])
    return str(out / 'vg150')


def test_shapes_vg150_loads_and_its_predicates_need_the_boxes(shapes_vg150):
    """The shapes scene graphs through VGSGGDataset, statistics and the metric core: a rule
    that reads the boxes recovers the GT, the class-pair frequency prior does not."""
    from ovkit.sgg.evaluation import evaluate_sgg
    from ovkit.sgg.metric import load_triplets
    from ovkit.sgg.statistics import get_statistics
    from ovkit.shapes import SHAPE_CLASSES, SHAPE_PREDICATES
    from ovkit.shapes.vg150 import spatial_predicate
    root = shapes_vg150
    train = VGSGGDataset(data_root=root, split='train', num_val_im=32)
    test = VGSGGDataset(data_root=root, split='test', num_val_im=32)
    assert len(train) > 80 and len(test) > 30
    assert test.metainfo['classes'] == SHAPE_CLASSES
    assert test.metainfo['predicates'][1:] == SHAPE_PREDICATES
    prior = get_statistics(train)['pred_dist']
    num_rel = len(SHAPE_PREDICATES) + 1

    def predictions(by_boxes):
        imgs = []
        for i in range(len(test)):
            d = test.get_data_info(i)
            boxes = np.array([x['bbox'] for x in d['instances']], np.float32)
            cls = np.array([x['bbox_label'] for x in d['instances']]) + 1
            s, o = np.nonzero(~np.eye(len(boxes), dtype=bool))
            scores = np.full((len(s), num_rel), 1e-3, np.float32)
            for r, (a, b) in enumerate(zip(s, o)):
                if by_boxes:
                    scores[r, spatial_predicate(boxes[a], boxes[b], d['width'],
                                                d['height'])] = 1
                else:
                    scores[r] = np.exp(prior[cls[a], cls[b]])
            imgs.append(dict(gt_boxes=boxes, gt_classes=cls, gt_rels=d['relations'],
                             pred_boxes=boxes, pred_classes=cls,
                             obj_scores=np.ones(len(boxes), np.float32),
                             pred_rel_inds=np.column_stack((s, o)), rel_scores=scores))
        return imgs

    zs = load_triplets(osp.join(root, 'zeroshot_triplet.npy'))
    boxes_rule = evaluate_sgg(predictions(True), 'predcls', zeroshot_triplets=zs)
    prior_only = evaluate_sgg(predictions(False), 'predcls', zeroshot_triplets=zs)
    assert boxes_rule['R@50'] > 0.9 and boxes_rule['mR@50'] > 0.85
    assert boxes_rule['zR@50'] > 0.8
    assert prior_only['R@50'] < 0.5 and prior_only['mR@50'] < 0.4


def maskrcnn_get_size(image_size, min_size=600, max_size=1000):
    """maskrcnn_benchmark/data/transforms/transforms.py Resize.get_size, one min size."""
    w, h = image_size
    size = min_size
    min_original_size = float(min((w, h)))
    max_original_size = float(max((w, h)))
    if max_original_size / min_original_size * size > max_size:
        size = int(round(max_size * min_original_size / max_original_size))
    if (w <= h and w == size) or (h <= w and h == size):
        return (h, w)
    if w < h:
        return (int(size * h / w), size)
    return (size, int(size * w / h))


def test_sgb_resize_gives_maskrcnns_size_and_pixels(tmp_path):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets.transforms import Resize
    from PIL import Image

    from ovkit.sgg.transforms import SGBResize, sgb_resize_size
    rng = np.random.default_rng(0)
    sizes = [(500, 333), (333, 500), (800, 600), (600, 800), (1280, 400), (375, 500),
             (640, 640)] + [tuple(int(v) for v in rng.integers(100, 1500, 2))
                            for _ in range(300)]
    differ = 0
    for w, h in sizes:
        assert sgb_resize_size(w, h) == maskrcnn_get_size((w, h)), (w, h)
        img = np.zeros((h, w, 3), np.uint8)
        mm = Resize(scale=(1000, 600), keep_ratio=True).transform(dict(img=img))['img_shape']
        differ += mm != maskrcnn_get_size((w, h))
    assert differ > 50              # mmdet's keep-ratio rule rounds where maskrcnn truncates
    # 500 x 333: maskrcnn 900 x 600 (int(600 * 500 / 333) = 900), mmdet 901 x 600
    path = str(tmp_path / 'im.jpg')
    Image.fromarray(rng.integers(0, 255, (333, 500, 3), dtype=np.uint8)).save(path)
    res = LoadImageFromFile(imdecode_backend='pillow')(dict(img_path=path))
    res['gt_bboxes'] = np.array([[10, 20, 110, 220]], np.float32)
    res = SGBResize(backend='pillow')(res)
    assert res['img_shape'] == (600, 900)
    np.testing.assert_allclose(res['gt_bboxes'], [[18, 600 / 333 * 20, 198,
                                                           600 / 333 * 220]], rtol=1e-6)
    # SGB: PIL RGB image -> torchvision F.resize (PIL bilinear) -> BGR; the same bytes here
    sgb = np.asarray(Image.open(path).convert('RGB').resize((900, 600), Image.BILINEAR))
    np.testing.assert_array_equal(res['img'], sgb[..., ::-1])
