#!/usr/bin/env bash
# Build and install mmcv 2.1.0 with ops against the torch in the given interpreter.
#
# Why by hand: mmdet 3.3.0 needs mmcv<2.2, OpenMMLab publishes no 2.1.0 wheel for torch 2.14,
# and the sdist's setup.py asks for -std=c++14/17 while torch >= 2.10 headers require C++20.
# The built wheel is cached per torch build under $OVKIT_CACHE (default ~/.cache/ovkit), so a
# second install, or CI on the same machine, takes seconds instead of ~15 minutes.
set -euo pipefail
PY=${1:-.venv/bin/python}
case $PY in /*) ;; *) PY="$PWD/$PY" ;; esac  # the build runs in another directory
CONSTRAINTS=${2:-}  # pins the torch already present, so mmcv's dependencies cannot swap it
PIP="$PY -m pip --disable-pip-version-check"

if "$PY" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  echo "[ovkit] mmcv 2.1.0 with ops already installed"
  exit 0
fi

TAG=$("$PY" -c "import torch, sys; print(f'torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}'.replace('+', '_'))")
CUDA_OPS=0
if [ "${FORCE_CUDA:-0}" = 1 ] || "$PY" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  CUDA_OPS=1; TAG="$TAG-cuda"
fi
CACHE=${OVKIT_CACHE:-$HOME/.cache/ovkit}/wheels/$TAG
mkdir -p "$CACHE"

if ! ls "$CACHE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "[ovkit] building mmcv 2.1.0 with ops for $TAG (about 15 minutes on 2 cores, once)"
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  $PIP download -q --no-deps --no-binary :all: -d "$WORK" mmcv==2.1.0
  tar xzf "$WORK"/mmcv-2.1.0.tar.gz -C "$WORK"
  SRC="$WORK/mmcv-2.1.0"
  if "$PY" - <<'PYEOF'
import os, sys, torch.utils.cpp_extension as ce
aten = os.path.join(ce.include_paths()[0], 'ATen', 'ATen.h')
sys.exit(0 if 'C++20' in open(aten).read() else 1)
PYEOF
  then
    echo "[ovkit] torch headers need C++20: patching mmcv's -std flags"
    sed -i -E 's/c\+\+1[47]/c++20/g' "$SRC/setup.py"
  fi
  ( cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=$CUDA_OPS MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      $PIP wheel -q --no-deps --no-build-isolation -w "$CACHE" . )
fi
# First mmcv itself (replacing any mmcv without ops), then its dependencies (opencv, addict,
# yapf, mmengine) under the constraints; --force-reinstall with dependencies would reinstall
# torch as well.
$PIP install -q ${CONSTRAINTS:+-c "$CONSTRAINTS"} --force-reinstall --no-deps "$CACHE"/mmcv-2.1.0-*.whl
$PIP install -q ${CONSTRAINTS:+-c "$CONSTRAINTS"} "$CACHE"/mmcv-2.1.0-*.whl
"$PY" -c "import mmcv, mmcv._ext; print('[ovkit] mmcv', mmcv.__version__, 'with ops')"
