# Shapes scene graphs in the VG150 layout (`python tools/data/make_shapes.py --out data/shapes
# --kinds vg150`): the same dataset, transforms and metric as VG150, on 8 shapes classes and 8
# spatial predicates decided by the boxes. Images (about 150 x 90) are shown at twice the size.
dataset_type = 'VGSGGDataset'
data_root = 'data/shapes/vg150/'
zeroshot_triplets = data_root + 'zeroshot_triplet.npy'
img_scale = (320, 208)
backend_args = None

pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadSGGAnnotations'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='PackSGGInputs'),
]
_split = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file='VG-SGG-with-attri.h5',
    dict_file='VG-SGG-dicts-with-attri.json',
    image_file='image_data.json',
    data_prefix=dict(img='VG_100K'),
    num_val_im=16,  # val = the first 16 images of the h5 train split
    pipeline=pipeline,
    backend_args=backend_args)

train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(_split, split='train'))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_split, split='val', test_mode=True))
test_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_split, split='test', test_mode=True))

val_evaluator = dict(type='SGGMetric', mode='predcls', zeroshot_triplets=zeroshot_triplets)
test_evaluator = val_evaluator
