#!/usr/bin/env bash
# tools/dist_train.sh CONFIG NPROC [train.py args]
# torchrun launcher; NNODES, NODE_RANK, MASTER_ADDR, PORT respected; gloo where no GPU.
set -euo pipefail
USAGE="usage: $0 CONFIG NPROC [train.py args]   (NPROC: processes on this machine, >= 1)"
if [ $# -lt 2 ]; then echo "$USAGE" >&2; exit 2; fi
CONFIG=$1
NPROC=$2
source "$(dirname "$0")/_launch_common.sh"
check_launch_args "$CONFIG" "$NPROC"
preflight train "$CONFIG" "${@:3}"
# torchrun (ovkit.tools.torchrun: without its report when a worker stopped on a user error)
exec "$PYTHON" -m ovkit.tools.torchrun \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" --master_port="$PORT" \
  "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
