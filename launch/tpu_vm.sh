#!/usr/bin/env bash
# One run on every worker of a Cloud TPU VM (e.g. v5e-32: 8 hosts x 4 chips); each worker runs
# the same command and jax.distributed finds the others (--distributed). The workdir must be
# where every worker reaches it: a gs:// URL (the usual: a TPU pod has no shared disk) or a
# shared mount. A WORKDIR that is a plain name (no / or ://) goes under $RUNS_ROOT, e.g.
# RUNS_ROOT=gs://my-bucket/runs. The checkout lives at REPO on each worker (default
# ~/bigmodel_jax) with its .venv made by the README's command.
#
#   RUNS_ROOT=gs://my-bucket/runs launch/tpu_vm.sh TPU_NAME ZONE configs/imagenet2012.py:vit vit [--config.KEY=VALUE ...]
#   launch/tpu_vm.sh TPU_NAME ZONE configs/imagenet2012.py:vit gs://my-bucket/runs/vit
#
# Rerunning the same line resumes from the newest checkpoint. A maintenance event sends SIGTERM:
# the run saves and exits 75 on every worker; run the line again after it.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG[:ARG] WORKDIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
case $workdir in
  */* | *://*) ;;
  *)
    if [ -z "${RUNS_ROOT:-}" ]; then
      echo "error: WORKDIR '$workdir' is a plain name: set RUNS_ROOT (e.g. gs://my-bucket/runs) or give a path or gs:// URL" >&2
      exit 2
    fi
    workdir="${RUNS_ROOT%/}/$workdir" ;;
esac
default_repo='~/bigmodel_jax'
repo=${REPO:-$default_repo}
# A leading ~ is left for the worker's shell to expand: the home there, not on this machine.
case $repo in
  "~") remote_repo="~" ;;
  "~/"*) remote_repo="~/$(printf '%q' "${repo:2}")" ;;
  *) remote_repo=$(printf '%q' "$repo") ;;
esac
args=$(printf ' %q' --config="$config" --workdir="$workdir" --distributed "$@")
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd $remote_repo && .venv/bin/python -m bigmodel_jax.main$args"
