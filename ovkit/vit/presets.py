"""What a config derives instead of a user editing it: classes from an image folder and the
input normalisation that a pretrained checkpoint was trained with.

Configs import these after ``_base_``::

    from ovkit.vit.presets import folder_classes, pretrained_norm
    classes = folder_classes(data_root, 'train')
    model = dict(data_preprocessor=pretrained_norm('augreg2_in21k_ft_in1k'), ...)
"""
import os
import os.path as osp
from typing import Optional, Tuple

# mean/std in 0..255 pixel units (mmpretrain's ClsDataPreprocessor), from timm's pretrained cfgs
NORMS = {
    'inception': dict(mean=[127.5] * 3, std=[127.5] * 3),  # timm IMAGENET_INCEPTION_MEAN/STD
    'imagenet': dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    'miil': dict(mean=[0.] * 3, std=[255.] * 3),  # *_miil tags: mean 0, std 1 on [0, 1]
}

# substring of a timm pretrained tag -> normalisation (first match wins; order matters)
_TAG_NORMS = (
    ('miil', 'miil'),
    ('augreg', 'inception'),
    ('orig_in21k', 'inception'),
    ('sam_', 'inception'),
    ('deit', 'imagenet'),
    ('mae', 'imagenet'),
    ('dino', 'imagenet'),
    ('tv_in1k', 'imagenet'),
    ('scratch', 'inception'),  # ovkit's own from-scratch recipes use the ViT paper's [-1, 1]
)
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def pretrained_norm(tag: str, to_rgb: bool = True) -> dict:
    """ClsDataPreprocessor arguments (mean, std, to_rgb) for a timm pretrained tag.

    Args:
        tag: timm name or tag, e.g. 'vit_base_patch16_224.augreg2_in21k_ft_in1k', 'deit_base'.
        to_rgb: images are loaded BGR (OpenCV) and the weights expect RGB.
    """
    name = tag.lower()
    if name in NORMS:
        return dict(type='ClsDataPreprocessor', to_rgb=to_rgb, **NORMS[name])
    for key, norm in _TAG_NORMS:
        if key in name:
            return dict(type='ClsDataPreprocessor', to_rgb=to_rgb, **NORMS[norm])
    raise ValueError(f'no known normalisation for pretrained tag {tag!r}: use a timm tag '
                     f'containing one of {[k for k, _ in _TAG_NORMS]} or one of {sorted(NORMS)}')


def _class_dirs(root: str) -> list:
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def _without_images(root: str, classes) -> list:
    return [c for c in classes if not any(
        f.lower().endswith(IMG_EXTENSIONS) for _, _, files in os.walk(osp.join(root, c))
        for f in files)]


def folder_classes(data_root: str, split: str = 'train', required: bool = True,
                   val_split: Optional[str] = 'val') -> Optional[Tuple[str, ...]]:
    """Class names of an ImageFolder split: its sub-folders, sorted (as torchvision).

    The validation split must hold the same class folders, each with images: a class missing
    there, or one that only it has (a typo), would make the validation accuracy silently wrong.

    Args:
        data_root: folder holding ``<split>/<class>/<image>``.
        split: sub-folder whose children are the classes.
        required: raise when the folder is absent; False returns None (a config read where the
            data is not, e.g. to predict; the preflight of a training or test then names the
            missing folder and how to fill it).
        val_split: sub-folder checked to have the same classes (None: not checked).
    """
    root = osp.join(data_root, split)
    if not osp.isdir(root) and not required:
        from .inputs import declare_image_folder  # the preflight's message says how to fix it
        declare_image_folder(data_root, 'edit data_root in the config, or run with DATA_ROOT='
                             '/path/to/folder where the config reads {{$DATA_ROOT:...}}')
        return None
    layout = (f'Put images as {data_root}/{split}/<class name>/<image>.jpg and '
              f'{data_root}/{val_split or "val"}/<class name>/<image>.jpg')
    if not osp.isdir(root):
        raise FileNotFoundError(
            f'data_root = {data_root!r}: no {split}/ folder ({root!r}). {layout}, or set '
            'data_root to such a folder; the shapes demo data comes from '
            '`python tools/data/make_shapes.py --out data/shapes`.')
    classes = _class_dirs(root)
    if not classes:
        raise FileNotFoundError(f'data_root = {data_root!r}: {root!r} has no class '
                                'sub-folders; expected <class name>/<image> inside it.')
    empty = _without_images(root, classes)
    if empty:
        raise FileNotFoundError(f'data_root = {data_root!r}: class folders without images in '
                                f'{root!r}: {empty[:5]} (remove them or add images)')
    if val_split:
        vroot = osp.join(data_root, val_split)
        if not osp.isdir(vroot):
            raise FileNotFoundError(
                f'data_root = {data_root!r}: no {val_split}/ folder ({vroot!r}) next to '
                f'{split}/. {layout} (move some images of each class from {split}/ to '
                f'{val_split}/).')
        vclasses = _class_dirs(vroot)
        missing = [c for c in classes if c not in vclasses]
        extra = [c for c in vclasses if c not in classes]
        if missing or extra:
            raise FileNotFoundError(
                f'data_root = {data_root!r}: {val_split}/ and {split}/ must hold the same class '
                'folders; ' + '; '.join(filter(None, [
                    f'{val_split}/ lacks {missing[:8]}' if missing else '',
                    f'only {val_split}/ has {extra[:8]}' if extra else ''])) +
                f' (add or rename folders in {vroot!r}).')
        empty = _without_images(vroot, classes)
        if empty:
            raise FileNotFoundError(f'data_root = {data_root!r}: class folders without images '
                                    f'in {vroot!r}: {empty[:5]} (add images of those classes)')
    return tuple(classes)
