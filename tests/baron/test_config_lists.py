"""BARON configs read their class lists and splits from ovkit.metadata / ovkit.shapes, and the
class-embedding files made from those lists have exactly one row per class."""
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

from ovkit.metadata import class_names
from ovkit.shapes import NOVEL_CLASSES, SHAPE_CLASSES
from tests.conftest import REPO

CASES = {  # config -> (class list, novel list or None)
    'coco.py': (class_names('coco_ov_65.txt'), class_names('coco_ov_17_novel.txt')),
    'lvis.py': (class_names('lvis_v1_1203.txt'), None),
    'shapes.py': (SHAPE_CLASSES, NOVEL_CLASSES),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_config_lists_come_from_the_metadata(name):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'baron', name))
    classes, novel = CASES[name]
    head = cfg.model.roi_head.bbox_head
    assert head.num_classes == len(classes)
    if name != 'lvis.py':  # mmdet's LVISV1Dataset carries its own 1203-class metainfo
        dataset = cfg.train_dataloader.dataset
        for source in dataset.get('datasets', [dataset]):  # detection + KD sources
            assert tuple(source.metainfo.classes) == tuple(classes)
    if novel is not None:
        assert [classes[i] for i in head.novel_class_ids] == list(novel)


def test_embedding_rows_must_match_the_class_list(tmp_path):
    """The head refuses an embeddings file made from another list (one class more)."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import ovkit.baron  # noqa: F401
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'baron', 'coco.py'))
    head_cfg = cfg.model.roi_head.bbox_head
    init_default_scope('mmdet')
    rng = np.random.default_rng(0)
    for rows, ok in ((head_cfg.num_classes, True), (head_cfg.num_classes + 1, False)):
        path = tmp_path / f'emb{rows}.npy'
        np.save(path, rng.normal(size=(rows, head_cfg.word_dim)).astype(np.float32))
        head_cfg.cls_embeddings_path = str(path)
        head_cfg.norm_cfg = dict(type='BN')  # SyncBN needs a process group
        if ok:
            head = MODELS.build(head_cfg)
            assert head.cls_embeddings.shape == (len(CASES['coco.py'][0]), head_cfg.word_dim)
        else:
            with pytest.raises(ValueError, match=f'has {rows} rows but'):
                MODELS.build(head_cfg)
