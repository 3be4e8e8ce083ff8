"""Sweeps: a config file's points (get_sweep), their workdirs and commands, and the launchers
that run them (`python -m bigmodel_jax.sweep`, whose docstring has the details).

Config files build their points with product, zipped, cross and chain (seeds are an axis like
any other):

  from bigmodel_jax.experiments import sweeps
  def get_sweep(arg):
    return sweeps.product({"optimizer.learning_rate": [1e-3, 1e-2], "seed": [0, 1, 2]})

Every point's config is parsed and checked as main would before anything is written or
launched. Launchers: local (this machine, `parallel` at a time), slurm (a submitit job array,
one task per point), submitit_local (the same jobs on this machine), tpu (the gcloud commands
that run each point on every worker of a TPU VM).
"""

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

from bigmodel_jax import storage
from bigmodel_jax.cli import parse_config
from bigmodel_jax.config import check_values, load_config_module
from bigmodel_jax.faults import ConfigError

Point = dict[str, Any]


# --- Building sweeps (used by config files) -------------------------------------------------------


def product(axes: dict[str, Iterable[Any]]) -> list[Point]:
  """Every combination: product({"a": [1, 2], "seed": [0, 1]}) -> 4 points."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(list(axes[k]) for k in keys))]


def zipped(axes: dict[str, Iterable[Any]]) -> list[Point]:
  """Values taken together: zipped({"model.dim": [64, 128], "optimizer.learning_rate": [1e-2, 5e-3]})."""
  columns = {k: list(v) for k, v in axes.items()}
  if len({len(v) for v in columns.values()}) > 1:
    raise ValueError(f"zipped: axes of different lengths {({k: len(v) for k, v in columns.items()})}")
  return [dict(zip(columns, values)) for values in zip(*columns.values())]


def chain(*sweeps: list[Point]) -> list[Point]:
  return [p for s in sweeps for p in s]


def cross(a: list[Point], b: list[Point]) -> list[Point]:
  """Every point of a combined with every point of b (e.g. a zipped sweep x seeds)."""
  return [{**p, **q} for p in a for q in b]


# --- Points, names and commands -------------------------------------------------------------------


def load_points(spec: str) -> list[Point]:
  path, _, arg = spec.partition(":")
  module = load_config_module(path)
  if not hasattr(module, "get_sweep"):
    raise ConfigError(f"config file {path} defines no get_sweep(arg)")
  try:
    points = module.get_sweep(arg) if arg else module.get_sweep()
  except Exception as e:  # noqa: BLE001
    raise ConfigError(f"{path}: get_sweep({arg!r}) failed: {type(e).__name__}: {e}") from e
  if not points or not all(isinstance(p, dict) for p in points):
    raise ConfigError(f"{path}: get_sweep({arg!r}) must return a non-empty list of dicts")
  return points


def value_text(v: Any) -> str:
  """A value as --config.KEY=VALUE takes it."""
  if isinstance(v, (list, tuple)):
    inner = ", ".join(value_text(x) for x in v)
    return f"({inner},)" if len(v) == 1 else f"({inner})"
  return repr(v) if isinstance(v, float) else str(v)


def point_name(point: Point) -> str:
  """'optimizer.learning_rate=0.01,seed=1': the overrides, in the order the sweep gives them."""
  text = ",".join(f"{k}={value_text(v)}" for k, v in point.items()) or "default"
  return "".join(c if c.isalnum() or c in "._=,-+" else "_" for c in text)[:200]


def point_config(spec: str, point: Point, extra: list[str]) -> tuple[str, list[str]]:
  """(--config's value, the --config.KEY=VALUE overrides) of a point: its `arg` (if any)
  replaces the config file's ARG; every other key is an override, after `extra`."""
  if "arg" in point:
    spec = f"{spec.partition(':')[0]}:{point['arg']}"
  return spec, [*extra, *(f"--config.{k}={value_text(v)}" for k, v in point.items() if k != "arg")]


def command(spec: str, workdir: str, point: Point, extra: list[str]) -> list[str]:
  spec, overrides = point_config(spec, point, extra)
  return [sys.executable, "-m", "bigmodel_jax.main", f"--config={spec}", f"--workdir={workdir}",
          *overrides]


def jobs(spec: str, root: str, extra: list[str]) -> list[dict[str, Any]]:
  """The points' names, workdirs and commands, each point's config parsed and checked as main
  would (config.check_values) first: a bad point stops the sweep before anything is written."""
  storage.check_bucket(root, "--root")
  if not storage.is_remote(root) and os.path.exists(root) and not os.path.isdir(root):
    raise ConfigError(f"--root {root} exists and is not a directory")
  points = load_points(spec)
  names = [point_name(p) for p in points]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ConfigError(f"the sweep repeats points: {', '.join(dupes)}")
  for name, point in zip(names, points):
    try:
      check_values(parse_config(*point_config(spec, point, extra)))
    except ConfigError as e:
      raise ConfigError(f"point {name}: {e}") from e
  return [{"name": n, "overrides": p, "workdir": storage.join(root, n),
           "command": command(spec, storage.join(root, n), p, extra)}
          for n, p in zip(names, points)]


def is_done(workdir: str) -> bool:
  return storage.exists(storage.join(workdir, "results.json"))


# --- Launchers ------------------------------------------------------------------------------------


def run_local(jobs: list[dict[str, Any]], parallel: int) -> int:
  """Runs the unfinished points, `parallel` at a time; returns how many failed. Each point's
  output goes to WORKDIR.log beside its workdir (a bucket's: written there when it ends)."""
  todo = [j for j in jobs if not is_done(j["workdir"])]
  print(f"{len(jobs)} points, {len(jobs) - len(todo)} finished already, {len(todo)} to run "
        f"({parallel} at a time)", flush=True)
  running: list[tuple[dict[str, Any], subprocess.Popen, float, Any]] = []
  failed = finished = 0
  while todo or running:
    while todo and len(running) < parallel:
      job = todo.pop(0)
      log = open(_log_path(job), "a")
      running.append((job, subprocess.Popen(job["command"], stdout=log, stderr=subprocess.STDOUT),
                      time.time(), log))
    time.sleep(0.2)
    for item in [r for r in running if r[1].poll() is not None]:
      running.remove(item)
      job, proc, t0, log = item
      log.close()
      if storage.is_remote(job["workdir"]):
        storage.write(job["workdir"] + ".log", storage.read_bytes(log.name))
      finished += 1
      if proc.returncode == 0:
        print(f"[{finished}] done {job['name']} ({time.time() - t0:.0f} s)", flush=True)
      else:
        failed += 1
        print(f"[{finished}] FAILED {job['name']} (exit {proc.returncode}): {_last_line(job)}",
              flush=True)
  return failed


def _log_path(job: dict[str, Any]) -> str:
  """Where a running point's output goes: WORKDIR.log; for a workdir in a bucket (no appends
  there) a local file under the temporary directory, copied to WORKDIR.log at the end."""
  if not storage.is_remote(job["workdir"]):
    os.makedirs(os.path.dirname(job["workdir"]) or ".", exist_ok=True)
    return job["workdir"] + ".log"
  local = os.path.join(tempfile.gettempdir(), "bigmodel-sweep-logs",
                       job["workdir"].replace("://", "/") + ".log")
  os.makedirs(os.path.dirname(local), exist_ok=True)
  return local


def _last_line(job: dict[str, Any]) -> str:
  with open(_log_path(job), errors="replace") as f:
    lines = [line.strip() for line in f if line.strip()]
  return lines[-1][:300] if lines else "(no output)"


class PointJob:
  """One point of DIR/sweep.json: what each task of a submitit job array runs. On a time limit or
  preemption submitit calls `checkpoint`: the run gets SIGTERM (it saves and exits 75) and the
  task is requeued, to resume from that checkpoint."""

  def __init__(self) -> None:
    self.proc: subprocess.Popen | None = None

  def __call__(self, root: str, index: int) -> int:
    job = json.loads(storage.read_text(storage.join(root, "sweep.json")))["points"][index]
    if is_done(job["workdir"]):
      return 0
    self.proc = subprocess.Popen(job["command"])
    if self.proc.wait() != 0:
      raise RuntimeError(f"{job['name']} exited with {self.proc.returncode}")
    return 0

  def checkpoint(self, *args: Any) -> Any:
    import signal

    import submitit
    if self.proc is not None and self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(timeout=100)
      except subprocess.TimeoutExpired:
        pass
    return submitit.helpers.DelayedSubmission(PointJob(), *args)


def submitit_executor(root: str, cluster: str, args: argparse.Namespace) -> Any:
  import submitit
  executor = submitit.AutoExecutor(folder=os.path.join(root, "submitit", "%j"), cluster=cluster)
  params: dict[str, Any] = dict(name="bigmodel_sweep", timeout_min=args.slurm_time_min,
                                slurm_array_parallelism=args.parallel)
  if cluster == "slurm":
    params.update(nodes=args.slurm_nodes, tasks_per_node=args.slurm_gpus_per_node,
                  gpus_per_node=args.slurm_gpus_per_node, slurm_signal_delay_s=120)
    if args.slurm_partition:
      params["slurm_partition"] = args.slurm_partition
    if args.slurm_account:
      params["slurm_account"] = args.slurm_account
  executor.update_parameters(**params)
  return executor


def slurm_script(root: str, n: int, args: argparse.Namespace) -> str:
  """The sbatch file submitit writes for this sweep's job array."""
  from submitit.slurm import slurm
  folder = os.path.join(os.path.abspath(root), "submitit", "%j")
  return slurm._make_sbatch_string(  # noqa: SLF001 (submitit's own writer; no cluster needed)
      command=f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(folder)}",
      folder=folder, job_name="bigmodel_sweep", partition=args.slurm_partition or None,
      time=args.slurm_time_min, nodes=args.slurm_nodes, ntasks_per_node=args.slurm_gpus_per_node,
      gpus_per_node=args.slurm_gpus_per_node, account=args.slurm_account or None,
      signal_delay_s=120, map_count=n, array_parallelism=args.parallel)


def remote_path(path: str) -> str:
  """A path for a remote shell, quoted, except that a leading ~ stays for that shell to expand
  (to the remote user's home, not ours)."""
  if path == "~" or path.startswith("~/"):
    return "~" + (f"/{shlex.quote(path[2:])}" if path[2:] else "/" if path != "~" else "")
  return shlex.quote(path)


def tpu_commands(jobs: list[dict[str, Any]], args: argparse.Namespace) -> list[list[str]]:
  """One gcloud command per point: the point's command on every worker (jax.distributed from
  the TPU environment), run from --tpu_repo on the VM."""
  out = []
  for job in jobs:
    remote = f"cd {remote_path(args.tpu_repo)} && " + " ".join(
        shlex.quote(a) for a in [".venv/bin/python", *job["command"][1:], "--distributed"])
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_name, f"--zone={args.tpu_zone}",
           "--worker=all", f"--command={remote}"]
    if args.tpu_project:
      cmd.insert(5, f"--project={args.tpu_project}")
    out.append(cmd)
  return out


def launch(jobs: list[dict[str, Any]], args: argparse.Namespace, extra: list[str]) -> int:
  """Runs the points (or, with args.dry_run, shows or writes what would run) on args.launcher,
  writing ROOT/sweep.json (`extra`: the overrides given for every point) first; the exit
  status: 1 if a point failed."""
  if args.dry_run and args.launcher in ("local", "submitit_local"):
    for job in jobs:
      state = "finished" if is_done(job["workdir"]) else "to run"
      print(f"{job['name']} [{state}]\n  {shlex.join(job['command'])}")
    return 0
  if args.launcher == "tpu":
    for cmd in tpu_commands(jobs, args):
      print(shlex.join(cmd), flush=True)
      if args.tpu_run and subprocess.run(cmd, check=False).returncode != 0:
        return 1
    return 0
  if storage.is_remote(args.root) and args.launcher != "local":
    raise ConfigError(f"--launcher={args.launcher} keeps its job files beside the runs on a "
                      f"shared disk: use a local --root, or --launcher=local or tpu with "
                      f"{args.root}")
  storage.makedirs(args.root)
  storage.write(storage.join(args.root, "sweep.json"), json.dumps(
      {"config": args.config, "overrides": extra, "points": jobs}, indent=2))
  if args.launcher == "local":
    return 1 if run_local(jobs, args.parallel) else 0
  if args.launcher == "slurm" and args.dry_run:
    path = os.path.join(args.root, "sweep.sbatch")
    with open(path, "w") as f:
      f.write(slurm_script(args.root, len(jobs), args))
    print(f"wrote {path} (a job array of {len(jobs)} tasks) and {args.root}/sweep.json")
    return 0
  cluster = "slurm" if args.launcher == "slurm" else "local"
  if cluster == "slurm" and subprocess.run(["which", "sbatch"], capture_output=True).returncode:
    raise ConfigError("--launcher=slurm: sbatch not found (no SLURM here); --dry_run writes the "
                      "job script")
  executor = submitit_executor(args.root, cluster, args)
  root = os.path.abspath(args.root)
  submitted = executor.map_array(PointJob(), [root] * len(jobs), list(range(len(jobs))))
  print(f"submitted {len(submitted)} jobs: {', '.join(j.job_id for j in submitted)}", flush=True)
  if cluster == "local":  # wait, and report like the local launcher
    failed = 0
    for job, handle in zip(jobs, submitted):
      try:
        handle.result()
        print(f"done {job['name']}")
      except Exception as e:  # noqa: BLE001
        failed += 1
        print(f"FAILED {job['name']}: {str(e).strip().splitlines()[-1][:300]}")
    return 1 if failed else 0
  return 0
