# Sourced by dist_train.sh / dist_test.sh: picks the interpreter and the rendezvous settings.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -z "${VIRTUAL_ENV:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"
  else PYTHON=$(command -v python || command -v python3); fi
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
if [ -z "${PORT:-}" ]; then
  if [ "$NNODES" != 1 ]; then
    echo "Multi-node runs need the same PORT on every node: set PORT (and MASTER_ADDR)." >&2
    exit 2
  fi
  # A free port, so two runs on one machine do not collide.
  PORT=$("$PYTHON" -c "import socket; s=socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# One thread per process unless the user says otherwise (torchrun's default, stated here).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# The launchers exec torchrun (ovkit.tools.torchrun), so this shell's PID becomes the workers'
# parent: a worker that finds another parent knows its launcher died before it could ask to die
# with it.
export OVKIT_LAUNCHER_PID=$$

# Launcher arguments, checked before anything starts (USAGE is set by the caller).
check_launch_args() {
  if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
    echo "error: NPROC must be a whole number of processes >= 1, got '$2'" >&2
    echo "$USAGE" >&2
    exit 2
  fi
  if [ ! -f "$1" ]; then
    echo "error: config file '$1' not found" >&2
    echo "$USAGE" >&2
    exit 2
  fi
}

# Every input the run reads, checked once here rather than in each of the N processes
# (ovkit.engine.preflight): a bad path is one line per problem, not a traceback per rank.
preflight() {
  "$PYTHON" -m ovkit.tools.preflight "$@" || exit $?
  export OVKIT_PREFLIGHT=done
}
