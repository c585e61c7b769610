#!/usr/bin/env bash
# One-command install of the ovkit stack into $VENV (default .venv). Idempotent: every step
# checks what is already there. Called by `make install`.
#
#   PYTHON=python3.11   interpreter for a new venv
#   VENV=.venv          target environment (an existing env with a CUDA torch is respected)
#   SYSTEM_SITE=1       create the venv with --system-site-packages (reuse a system torch)
#   FORCE_CUDA=1        build mmcv's CUDA ops too (needs nvcc matching torch's CUDA)
#   OVKIT_NEED_GIB=N    free disk (GiB) required before starting (default 8, or 2 with torch present)
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${VENV:-.venv}
if [ -z "${PYTHON:-}" ]; then
  PYTHON=$(command -v python3.11 || command -v python3)
fi

# Fail early and clearly on a full disk (pip's own error comes after minutes of copying).
TORCH_FROM=$VENV/bin/python
[ "${SYSTEM_SITE:-0}" = 1 ] && [ ! -x "$TORCH_FROM" ] && TORCH_FROM=$PYTHON  # the venv will see it
TORCH_OK=0  # the venv's own torch passed the check (importing torch takes seconds: once)
if [ -x "$TORCH_FROM" ] && "$TORCH_FROM" tools/install/check_torch.py >/dev/null 2>&1; then
  NEED_GIB=2  # torch is there: mmcv, OpenMMLab and the rest
  [ "$TORCH_FROM" = "$VENV/bin/python" ] && TORCH_OK=1
else
  NEED_GIB=8  # the torch/torchvision pair alone is about 5.6 GB
fi
"$PYTHON" tools/install/check_disk.py "$VENV" "${OVKIT_NEED_GIB:-$NEED_GIB}" \
  "the ovkit install into $VENV"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[ovkit] creating $VENV with $PYTHON"
  if [ "${SYSTEM_SITE:-0}" = 1 ]; then "$PYTHON" -m venv --system-site-packages "$VENV"
  else "$PYTHON" -m venv "$VENV"; fi
fi
PY="$(cd "$VENV/bin" && pwd)/python"  # absolute: build_mmcv.sh changes directory
PIP="$PY -m pip --disable-pip-version-check"

echo "[ovkit] build tools"
$PIP install -q -r requirements/build.txt

# torch: keep a present, compatible pair; otherwise install the tested pair.
# (requirements/build.txt pins no torch, so the first check still holds)
if [ "$TORCH_OK" = 1 ] || "$PY" tools/install/check_torch.py; then
  echo "[ovkit] keeping the installed torch: $("$PY" -c 'import importlib.metadata as m; print(m.version("torch"))')"
else
  echo "[ovkit] installing the tested torch pair (requirements/torch.txt)"
  $PIP install -q -r requirements/torch.txt
  "$PY" tools/install/check_torch.py
fi
# Every later install is constrained to the torch now present, so nothing swaps it.
CONSTRAINTS="$VENV/ovkit-constraints.txt"
"$PY" - > "$CONSTRAINTS" <<'PYEOF'
import importlib.metadata as md
for name in ('torch', 'torchvision', 'setuptools'):
    print(f'{name}=={md.version(name)}')
print(open('requirements/mminstall.txt').read())  # the OpenMMLab pins, mmcv's included
PYEOF

bash tools/install/build_mmcv.sh "$PY" "$CONSTRAINTS"

echo "[ovkit] OpenMMLab packages and runtime requirements"
$PIP install -q -c "$CONSTRAINTS" -r requirements/mminstall.txt -r requirements/runtime.txt \
  -r requirements/optional.txt -r requirements/tests.txt
$PIP install -q -c "$CONSTRAINTS" --no-build-isolation --no-deps -e .

"$PY" -c "import ovkit, mmcv.ops, mmdet, mmaction.models, mmpretrain, open_clip; \
print('[ovkit] ready:', ovkit.env_summary())"
