#!/usr/bin/env bash
# One run on this machine; the console output is also appended to WORKDIR.log (beside the workdir).
#   launch/local.sh configs/mnist1d.py:cnn runs/mnist1d_cnn [--config.KEY=VALUE ...]
# Rerunning the same line resumes the run from its newest checkpoint.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG[:ARG] WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
mkdir -p "$(dirname "$workdir")"
"$python" -m bigmodel_jax.main --config="$config" --workdir="$workdir" "$@" 2>&1 | tee -a "$workdir.log"
exit "${PIPESTATUS[0]}"
