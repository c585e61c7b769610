#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded shapes data.
#   1. generate shapes data, 2. train with tools/dist_train.sh on NPROC processes,
#   3. evaluate the checkpoint with tools/test.py and print its metrics;
#   4. BARON on shapes: novel-class AP50 against its ablation (tools/demo_baron.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PYTHON=${PYTHON:-$VENV/bin/python}
NPROC=${NPROC:-2}
# NPROC processes need NPROC GPUs; with fewer, the demo runs on CPU processes (gloo).
if [ "$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')" -lt "$NPROC" ]; then
  export CUDA_VISIBLE_DEVICES=
fi

"$PYTHON" tools/data/make_shapes.py --out data/shapes

run() {  # run CONFIG NAME
  local config=$1 work=work_dirs/demo_$2
  echo "== training $config on $NPROC processes -> $work"
  bash tools/dist_train.sh "$config" "$NPROC" --work-dir "$work"
  local ckpt
  ckpt=$(cat "$work/last_checkpoint")
  echo "== evaluating $ckpt"
  "$PYTHON" tools/test.py "$config" "$ckpt" --work-dir "$work/test" > "$work/test.log" 2>&1 \
    || { tail -30 "$work/test.log"; exit 1; }
  echo "== metrics of $config (full log: $work/test.log)"
  grep -E "(Epoch|Iter)\(test\)" "$work/test.log" | tail -1 | sed -E 's/.*\]\s+//; s/  (data_)?time: [0-9.]+//g' \
    | tr -s ' ' '\n' | paste - - | awk '{printf "  %-22s %s\n", $1, $2}' \
    || { echo "no test metrics in $work/test.log" >&2; exit 1; }
}

run configs/shapes/faster_rcnn_tiny.py faster_rcnn_tiny
# BARON: open-vocabulary detection, against its ablation (tools/demo_baron.sh, docs/baron.md)
VENV=$VENV NPROC=$NPROC bash tools/demo_baron.sh
