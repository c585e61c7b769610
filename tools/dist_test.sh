#!/usr/bin/env bash
# tools/dist_test.sh CONFIG CKPT NPROC [test.py args]
set -euo pipefail
USAGE="usage: $0 CONFIG CKPT NPROC [test.py args]   (NPROC: processes on this machine, >= 1)"
if [ $# -lt 3 ]; then echo "$USAGE" >&2; exit 2; fi
CONFIG=$1
CKPT=$2
NPROC=$3
source "$(dirname "$0")/_launch_common.sh"
check_launch_args "$CONFIG" "$NPROC"
preflight test "$CONFIG" "$CKPT" "${@:4}"
# torchrun (ovkit.tools.torchrun: without its report when a worker stopped on a user error)
exec "$PYTHON" -m ovkit.tools.torchrun \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" --master_port="$PORT" \
  "$ROOT/tools/test.py" "$CONFIG" "$CKPT" --launcher pytorch "${@:4}"
