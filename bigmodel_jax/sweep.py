"""Runs a config file's sweep: every point in its own workdir under --root.

  python -m bigmodel_jax.sweep --config=configs/FILE.py[:ARG] --root=DIR [--parallel=N]
      [--dry_run] [--launcher=local|slurm|submitit_local|tpu] [--config.KEY=VALUE ...]

A config file defines a sweep with `get_sweep(arg)`, returning the points as override dicts
(dotted keys; the key "arg" picks the config file's ARG, i.e. a variant), built with
experiments/sweeps.py's `product`, `zipped`, `cross` and `chain`; seeds are an axis like any
other:

  from bigmodel_jax.experiments import sweeps
  def get_sweep(arg):
    return sweeps.product({"optimizer.learning_rate": [1e-3, 1e-2], "seed": [0, 1, 2]})

Each point runs `python -m bigmodel_jax.main --config=FILE[:ARG] --workdir=DIR/NAME
--config.KEY=VALUE ...`, NAME made from its overrides; --config.KEY=VALUE given here apply to
every point. Rerunning skips finished points (results.json) and resumes unfinished ones; a point
that fails is reported and the others go on (exit status 1 if any failed). DIR/sweep.json lists
the points and their commands. Launchers: local (this machine, --parallel at a time), slurm (a
submitit job array, one task per point), submitit_local (the same submitit jobs on this
machine), tpu (the gcloud commands that run each point on every worker of a TPU VM). Every
point's config is checked first: a bad one stops the sweep before anything is written. DIR may
be a gs:// URL (local and tpu launchers; WORKSPACE.md, "Runs in a bucket"). The work:
experiments/sweeps.py.
"""

import argparse
import os

from bigmodel_jax import storage
from bigmodel_jax.cli import ArgumentParser, run_script
from bigmodel_jax.experiments import sweeps
from bigmodel_jax.faults import ConfigError


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
  p = ArgumentParser(prog="python -m bigmodel_jax.sweep", description=__doc__.splitlines()[0])
  p.add_argument("--config", required=True, help="path.py[:arg] whose get_sweep(arg) is run")
  p.add_argument("--root", required=True, help="directory (or gs:// URL) of the sweep's "
                 "workdirs; a plain name goes under $RUNS_ROOT when that is set")
  p.add_argument("--parallel", type=int, default=1, help="points at a time (slurm: array limit)")
  p.add_argument("--dry_run", action="store_true", help="list the points and their commands")
  p.add_argument("--launcher", default="local", choices=["local", "slurm", "submitit_local", "tpu"])
  p.add_argument("--slurm_partition", default="")
  p.add_argument("--slurm_account", default="")
  p.add_argument("--slurm_nodes", type=int, default=1)
  p.add_argument("--slurm_gpus_per_node", type=int, default=1, help="one task per GPU")
  p.add_argument("--slurm_time_min", type=int, default=24 * 60)
  p.add_argument("--tpu_name", default="")
  p.add_argument("--tpu_zone", default="")
  p.add_argument("--tpu_project", default="")
  p.add_argument("--tpu_repo", default="~/bigmodel_jax", help="the checkout on the TPU VM")
  p.add_argument("--tpu_run", action="store_true", help="run the gcloud commands, not print them")
  args, rest = p.parse_known_args(argv)
  bad = [a for a in rest if not a.startswith("--config.")]
  if bad:
    raise ConfigError(f"unexpected arguments: {' '.join(bad)}")
  if args.parallel <= 0:
    raise ConfigError(f"--parallel must be positive, got {args.parallel}")
  if args.launcher == "tpu" and not (args.tpu_name and args.tpu_zone):
    raise ConfigError("--launcher=tpu needs --tpu_name and --tpu_zone")
  runs_root = os.environ.get("RUNS_ROOT", "")  # as launch/tpu_vm.sh: e.g. gs://BUCKET/runs
  if runs_root and "/" not in args.root:
    args.root = storage.join(runs_root, args.root)
  return args, rest


def main(argv: list[str]) -> int:
  args, extra = parse(argv)
  return sweeps.launch(sweeps.jobs(args.config, args.root, extra), args, extra)


def run() -> None:
  run_script(main)


if __name__ == "__main__":
  run()
