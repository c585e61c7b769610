"""Classes from an image folder (as torchvision) and normalisation per checkpoint (as timm)."""
import pytest
import timm
from PIL import Image
from torchvision.datasets import ImageFolder

from ovkit.vit.presets import folder_classes, pretrained_norm


def make_folder(root, classes, per_class=1, splits=('train', 'val')):
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for k in range(per_class):
                Image.new('RGB', (8, 8)).save(root / split / c / f'{k}.png')


def test_classes_sorted_like_torchvision(tmp_path):
    make_folder(tmp_path, ['zebra', 'Ant', 'cat', 'b_2', 'b_10'])
    (tmp_path / 'train' / 'notes.txt').write_text('not a class')
    assert folder_classes(str(tmp_path)) == tuple(ImageFolder(str(tmp_path / 'train')).classes)
    assert folder_classes(str(tmp_path)) == ('Ant', 'b_10', 'b_2', 'cat', 'zebra')


def test_missing_or_empty_folders_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='data_root'):
        folder_classes(str(tmp_path / 'nowhere'))
    assert folder_classes(str(tmp_path / 'nowhere'), required=False) is None
    make_folder(tmp_path, ['a'])
    (tmp_path / 'train' / 'b').mkdir()
    with pytest.raises(FileNotFoundError, match=r"\['b'\]"):
        folder_classes(str(tmp_path))


def test_val_folder_is_checked(tmp_path):
    root = str(tmp_path)
    make_folder(tmp_path, ['cat', 'dog', 'owl'], splits=('train', ))
    with pytest.raises(FileNotFoundError, match=r"no val/ folder \(.*val'\) next to train/"):
        folder_classes(root)
    assert folder_classes(root, val_split=None) == ('cat', 'dog', 'owl')
    make_folder(tmp_path, ['cat', 'dgo'], splits=('val', ))
    with pytest.raises(FileNotFoundError) as e:
        folder_classes(root)
    assert "val/ lacks ['dog', 'owl']; only val/ has ['dgo']" in str(e.value)
    (tmp_path / 'val' / 'dgo').rename(tmp_path / 'val' / 'dog')
    (tmp_path / 'val' / 'owl').mkdir()
    with pytest.raises(FileNotFoundError, match=r"without images in .*val'.*\['owl'\]"):
        folder_classes(root)
    Image.new('RGB', (8, 8)).save(tmp_path / 'val' / 'owl' / 'x.jpg')
    assert folder_classes(root) == ('cat', 'dog', 'owl')
    # a config read where the data is not still reads (classes None)
    assert folder_classes(str(tmp_path / 'absent'), required=False) is None


@pytest.mark.parametrize('tag', [
    'vit_base_patch16_224.augreg2_in21k_ft_in1k', 'vit_base_patch16_224.augreg_in1k',
    'vit_base_patch16_224.orig_in21k', 'vit_base_patch16_224.sam_in1k',
    'deit_base_patch16_224.fb_in1k', 'deit_base_distilled_patch16_224.fb_in1k',
    'vit_base_patch16_224.mae', 'vit_base_patch16_224_miil.in21k', 'vit_small_patch16_224.dino'])
def test_norm_matches_timm_pretrained_cfg(tag):
    cfg = timm.models.get_pretrained_cfg(tag.split('.')[0] + '.' + tag.split('.')[1])
    norm = pretrained_norm(tag)
    assert norm['mean'] == pytest.approx([m * 255 for m in cfg.mean])
    assert norm['std'] == pytest.approx([s * 255 for s in cfg.std])
    assert norm['to_rgb'] and norm['type'] == 'ClsDataPreprocessor'


def test_unknown_tag():
    with pytest.raises(ValueError, match='no known normalisation'):
        pretrained_norm('resnet50.a1_in1k')
