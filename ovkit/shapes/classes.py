"""The shapes class list and its open-vocabulary split: the one source every shapes config,
writer and test reads (``from ovkit.shapes import SHAPE_CLASSES``)."""

# Order is the category order of every shapes config (COCO category id = index + 1).
SHAPE_CLASSES = ('circle', 'square', 'triangle', 'diamond', 'cross', 'hexagon', 'star', 'ring')
# Open-vocabulary split: the last two are novel (never annotated in train_base.json).
NOVEL_CLASSES = ('star', 'ring')
BASE_CLASSES = tuple(c for c in SHAPE_CLASSES if c not in NOVEL_CLASSES)
NOVEL_CLASS_IDS = tuple(SHAPE_CLASSES.index(c) for c in NOVEL_CLASSES)
# Spatial predicates of the VG150-format scene graphs (vg150.py), in predicate-index order
# (index + 1; 0 is SGB's background). Each is decided by the two boxes alone.
SHAPE_PREDICATES = ('left of', 'right of', 'above', 'below', 'near', 'overlapping', 'inside',
                    'contains')
