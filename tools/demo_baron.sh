#!/usr/bin/env bash
# BARON's open-vocabulary demo on shapes (`make demo` runs it; docs/baron.md has the figures).
#   1. shapes detection data (400 train / 100 val images) in $WS/data/shapes
#   2. the tiny shapes CLIP (tools/data/train_shapes_clip.py: contrastive training on crops of
#      every class, novel ones included; cached by seed) and class embeddings from it
#   3. BARON (configs/baron/shapes.py) and the ablation without the bag and single-region losses
#      (configs/baron/baron-nokd_r18-fpn_tiny_shapes.py), both trained on base-class boxes only
#      with tools/dist_train.sh on NPROC processes; AP50 from the evaluation at the end of
#      training (the config's test set and evaluator, as tools/test.py; on NPROC processes other
#      images share a batch, so the figures differ slightly from tools/test.py's, docs/baron.md)
#   4. novel / base AP50 of both, and tools/ov_infer.py drawing a novel class (star)
# Runs in $WS (default work_dirs/demo_baron), since the configs name their files relative to
# the working directory. CFG_OPTIONS="k=v ..." is passed to both trainings (a quick smoke run:
# CFG_OPTIONS="train_cfg.max_iters=4").
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-.venv}
[[ $VENV = /* ]] || VENV=$ROOT/$VENV
export PYTHON=${PYTHON:-$VENV/bin/python}
NPROC=${NPROC:-2}
WS=${WS:-$ROOT/work_dirs/demo_baron}
# Tiny models on CPU: one thread per process is much faster than threads fighting over cores
# (torchrun sets this for NPROC > 1 only).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# (skipped when the caller, e.g. tools/demo.sh, has already hidden the GPUs)
if [ "${CUDA_VISIBLE_DEVICES-unset}" != "" ] \
    && [ "$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')" -lt "$NPROC" ]; then
  export CUDA_VISIBLE_DEVICES=
fi
mkdir -p "$WS/work_dirs"
cd "$WS"

"$PYTHON" "$ROOT/tools/data/make_shapes.py" --out data/shapes --kinds coco --num-train 400 \
  --num-val 100
"$PYTHON" "$ROOT/tools/data/train_shapes_clip.py" --out-dir data/shapes/clip --seed 0 --threads 1
"$PYTHON" "$ROOT/tools/data/gen_class_embeddings.py" --model-name tiny --device cpu \
  --clip-checkpoint data/shapes/clip/shapes_clip_seed0.pth --classes data/shapes/classes.txt \
  --out data/shapes/baron/shapes_clip.npy

declare -A AP
run() {  # run NAME CONFIG
  local name=$1 config=$ROOT/configs/baron/$2 work=work_dirs/$1
  echo "== $name: training $2 on $NPROC processes (base-class boxes only) -> $WS/$work"
  # shellcheck disable=SC2086  # CFG_OPTIONS: one word per key=value
  bash "$ROOT/tools/dist_train.sh" "$config" "$NPROC" --work-dir "$work" \
    ${CFG_OPTIONS:+--cfg-options $CFG_OPTIONS} > "$work.train.log" 2>&1 \
    || { tail -40 "$work.train.log"; exit 1; }
  # The training's evaluation after its last iteration: the config's val set and evaluator,
  # which are its test set and evaluator, on the weights of the last checkpoint; so this is
  # what `tools/test.py CONFIG $(cat $work/last_checkpoint)` measures, without a second run
  # (up to batching: NPROC processes put other images in a batch, and batched convolutions
  # round differently; seed 0: 37.1 / 98.9 here, 36.4 / 99.0 from tools/test.py).
  local line
  line=$(grep -E "Iter\(val\)" "$work.train.log" | tail -1)
  [ -n "$line" ] || { echo "no evaluation in $work.train.log" >&2; exit 1; }
  for key in novel_ap50 base_ap50 all_ap50; do
    AP[$name.$key]=$(sed -E "s/.*coco\/$key: ([0-9.]+).*/\1/" <<< "$line")
  done
  echo "   $name: novel AP50 ${AP[$name.novel_ap50]}, base AP50 ${AP[$name.base_ap50]}" \
       "(log: $WS/$work.train.log)"
}
run baron shapes.py
run ablation baron-nokd_r18-fpn_tiny_shapes.py

# a validation image with a star (a novel class: no star box was ever a training target)
img=$("$PYTHON" - <<'EOF'
import json
val = json.load(open('data/shapes/coco/annotations/val.json'))
star = next(c['id'] for c in val['categories'] if c['name'] == 'star')
ids = sorted({a['image_id'] for a in val['annotations'] if a['category_id'] == star})
print(next(f"data/shapes/coco/val/{i['file_name']}" for i in val['images'] if i['id'] == ids[0]))
EOF
)
"$PYTHON" "$ROOT/tools/ov_infer.py" "$ROOT/configs/baron/shapes.py" \
  "$(cat work_dirs/baron/last_checkpoint)" "$img" --classes "star,circle,ring" \
  --out-dir outputs/ov_infer --device cpu

echo
echo "BARON open vocabulary on shapes (novel: star, ring; trained on base boxes only), AP50:"
printf '  %-34s %8s %8s %8s\n' model novel base all
printf '  %-34s %8s %8s %8s\n' 'BARON (configs/baron/shapes.py)' "${AP[baron.novel_ap50]}" \
  "${AP[baron.base_ap50]}" "${AP[baron.all_ap50]}"
printf '  %-34s %8s %8s %8s\n' 'ablation: no bag / single losses' "${AP[ablation.novel_ap50]}" \
  "${AP[ablation.base_ap50]}" "${AP[ablation.all_ap50]}"
echo "novel classes drawn by tools/ov_infer.py: $WS/outputs/ov_infer/"
