# VG150 (SGB's VG-SGG split) for scene graph models. Files and where they are published:
# docs/sgg.md ("Data: VG150"). Every path is relative to data_root.
dataset_type = 'VGSGGDataset'
data_root = 'data/vg/'
ann_file = 'VG-SGG-with-attri.h5'
dict_file = 'VG-SGG-dicts-with-attri.json'
image_file = 'image_data.json'
image_dir = 'VG_100K'
zeroshot_triplets = data_root + 'zeroshot_triplet.pytorch'
backend_args = None

# SGB's very input pixels: PIL decoding without EXIF rotation (SGB's Image.open().convert('RGB')),
# maskrcnn-benchmark's Resize(600, 1000) size rule (SGBResize; mmdet's keep-ratio rule rounds
# the long side where maskrcnn truncates it) with PIL's bilinear filter; no flip (left/right
# predicates). A file that fails to load is skipped and counted (ovkit.engine, default_hooks.
# bad_samples).
train_pipeline = [
    dict(type='LoadImageFromFile', color_type='color_ignore_orientation',
         imdecode_backend='pillow', backend_args=backend_args),
    dict(type='LoadSGGAnnotations'),
    dict(type='SGBResize', min_size=600, max_size=1000, backend='pillow'),
    dict(type='PackSGGInputs'),
]
test_pipeline = train_pipeline

_split = dict(
    type=dataset_type,
    data_root=data_root,
    ann_file=ann_file,
    dict_file=dict_file,
    image_file=image_file,
    data_prefix=dict(img=image_dir),
    backend_args=backend_args)

# SGB: 12 images per batch in all (here 6 per GPU, 2 GPUs); test batch 2 in all.
train_dataloader = dict(
    batch_size=6,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(_split, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_split, split='val', test_mode=True, pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(_split, split='test', test_mode=True, pipeline=test_pipeline))

val_evaluator = dict(type='SGGMetric', mode='predcls', zeroshot_triplets=zeroshot_triplets)
test_evaluator = val_evaluator
