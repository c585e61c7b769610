#!/usr/bin/env bash
# `make demo`: the main job end to end on the embedded shapes data.
#   1. generate shapes data, 2. train the tiny Faster R-CNN with tools/dist_train.sh on NPROC
#   processes, 3. evaluate its checkpoint with tools/test.py and print the metrics;
#   4. BARON on shapes: novel-class AP50 against its ablation (tools/demo_baron.sh).
# Steps 2-3 run beside step 4 at the lowest CPU priority: they take the cores BARON's part
# leaves idle (its single-process steps: data, tests, start-up), so on 2 cores they add little
# wall time. Their metrics print at the end; if they fail, the demo stops at once with their log.
# FRCNN_CFG_OPTIONS="k=v ..." is passed to the Faster R-CNN's training (CFG_OPTIONS to BARON's).
# Runs in $WS (default: the repository root: data/shapes, work_dirs/demo_*).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-.venv}
[[ $VENV = /* ]] || VENV=$ROOT/$VENV
export PYTHON=${PYTHON:-$VENV/bin/python}
export NPROC=${NPROC:-2}
WS=${WS:-$ROOT}
# One thread per process: threads fighting over 2 busy cores cost far more than they give.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# NPROC processes need NPROC GPUs; with fewer, the demo runs on CPU processes (gloo).
if [ "$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')" -lt "$NPROC" ]; then
  export CUDA_VISIBLE_DEVICES=
fi
mkdir -p "$WS/work_dirs"
WS=$(cd "$WS" && pwd)  # absolute: demo_baron.sh gets a folder inside it
cd "$WS"
"$PYTHON" "$ROOT/tools/data/make_shapes.py" --out data/shapes

run() {  # run CONFIG NAME
  set -euo pipefail
  local config=$ROOT/$1 work=work_dirs/demo_$2
  echo "== training $1 on $NPROC processes -> $work"
  # shellcheck disable=SC2086  # FRCNN_CFG_OPTIONS: one word per key=value
  bash "$ROOT/tools/dist_train.sh" "$config" "$NPROC" --work-dir "$work" \
    ${FRCNN_CFG_OPTIONS:+--cfg-options $FRCNN_CFG_OPTIONS}
  local ckpt
  ckpt=$(cat "$work/last_checkpoint")
  echo "== evaluating $ckpt"
  "$PYTHON" "$ROOT/tools/test.py" "$config" "$ckpt" --work-dir "$work/test" > "$work/test.log" \
    2>&1 || { tail -30 "$work/test.log"; exit 1; }
  echo "== metrics of $1 (full log: $WS/$work/test.log)"
  grep -E "(Epoch|Iter)\(test\)" "$work/test.log" | tail -1 | sed -E 's/.*\]\s+//; s/  (data_)?time: [0-9.]+//g' \
    | tr -s ' ' '\n' | paste - - | awk '{printf "  %-22s %s\n", $1, $2}' \
    || { echo "no test metrics in $work/test.log" >&2; exit 1; }
}

log=work_dirs/demo_faster_rcnn_tiny.log
echo "== tiny Faster R-CNN: trained and tested beside BARON's part (log: $WS/$log)"
# Both parts run in process groups of their own, so that either failing (or Ctrl-C) stops the
# other's launcher and workers too (the EXIT trap); the Faster R-CNN also on a free port of its
# own (a PORT set for BARON's runs would collide with it).
frcnn= baron=
stop() {  # each part's whole process group; torchrun gives its workers up to 30 s to end
  local pid i
  for pid in $frcnn $baron; do kill -- -"$pid" 2>/dev/null || true; done
  for pid in $frcnn $baron; do
    for ((i = 0; i < 35; i++)); do kill -0 -- -"$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- -"$pid" 2>/dev/null || true
  done
}
trap stop EXIT
ROOT=$ROOT WS=$WS setsid -w nice -n 19 env -u PORT FRCNN_CFG_OPTIONS="${FRCNN_CFG_OPTIONS:-}" \
  bash -c "$(declare -f run); run configs/shapes/faster_rcnn_tiny_demo.py faster_rcnn_tiny" \
  > "$log" 2>&1 &
frcnn=$!
# BARON: open-vocabulary detection, against its ablation (tools/demo_baron.sh, docs/baron.md)
VENV=$VENV WS=$WS/work_dirs/demo_baron setsid -w bash "$ROOT/tools/demo_baron.sh" &
baron=$!

frcnn_failed() {
  echo "tiny Faster R-CNN failed (log: $WS/$log):" >&2; tail -40 "$log" >&2; exit 1
}
# Watch both: a failed Faster R-CNN stops the demo at once, not after BARON's ~8 minutes. (If
# both fail within one poll, BARON's failure is the one reported.)
frcnn_done=0
while kill -0 "$baron" 2>/dev/null; do
  if [ $frcnn_done = 0 ] && ! kill -0 "$frcnn" 2>/dev/null; then
    wait "$frcnn" || frcnn_failed
    frcnn_done=1
  fi
  sleep 2
done
wait "$baron"  # BARON's part has printed why it failed; set -e ends the demo
echo
if [ $frcnn_done = 0 ]; then wait "$frcnn" || frcnn_failed; fi
trap - EXIT
grep -A20 "^== metrics of" "$log"
echo "make demo: done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
