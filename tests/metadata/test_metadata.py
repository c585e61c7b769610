"""ovkit.metadata: one resolver for the shipped lists."""
import os.path as osp

import pytest

from ovkit.metadata import class_names, metadata_path, read_lines, resolve, shipped_names


def test_shipped_lists_resolve_by_name():
    assert {'coco_80.txt', 'coco_ov_65.txt', 'coco_ov_48_base.txt', 'coco_ov_17_novel.txt',
            'lvis_v1_1203.txt', 'prompt_templates.txt'} <= set(shipped_names())
    path = metadata_path('coco_80.txt')
    assert osp.isabs(path) and osp.isfile(path)
    coco = class_names('coco_80.txt')
    assert isinstance(coco, tuple) and len(coco) == 80 and coco[0] == 'person'
    # The OV split is a partition of the 65 classes, each in COCO order.
    base, novel = class_names('coco_ov_48_base.txt'), class_names('coco_ov_17_novel.txt')
    ov65 = class_names('coco_ov_65.txt')
    assert sorted(base + novel) == sorted(ov65) and len(base) == 48 and len(novel) == 17
    assert list(ov65) == [c for c in coco if c in ov65]
    assert len(class_names('lvis_v1_1203.txt')) == 1203


def test_an_existing_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    mine = tmp_path / 'coco_80.txt'
    mine.write_text('# my list\ncat\n\ndog\n')
    assert class_names(str(mine)) == ('cat', 'dog')
    monkeypatch.chdir(tmp_path)
    assert resolve('coco_80.txt') == 'coco_80.txt'  # the user's file in the working dir
    assert read_lines('coco_80.txt') == ['cat', 'dog']


def test_errors_name_the_file_and_the_shipped_lists(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"class names file 'nope.txt' not found.*"
                       r'coco_ov_65\.txt'):
        class_names('nope.txt')
    with pytest.raises(FileNotFoundError, match="ships no metadata file named 'x/coco_80.txt'"):
        metadata_path('x/coco_80.txt')
    dup = tmp_path / 'dup.txt'
    dup.write_text('a\nb\na\n')
    with pytest.raises(ValueError, match=r"repeats \['a'\]"):
        class_names(str(dup))
    empty = tmp_path / 'empty.txt'
    empty.write_text('# nothing\n')
    with pytest.raises(ValueError, match='has no class names'):
        class_names(str(empty))
