"""Trains one experiment: python -m bigmodel_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR.

Overrides: --config.KEY=VALUE (the config is locked: unknown keys and wrong types are errors).
Rerunning the same command on the same workdir resumes from its newest checkpoint.

Several processes (multi-host): each runs the same command and `jax.distributed` joins them,
  from flags     --coordinator_address=HOST:PORT --num_processes=N --process_id=I
  under SLURM    srun ... (one task per node or per GPU; read from SLURM's environment)
  on a TPU VM    --distributed (every worker runs the command; TPU defaults)
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import cli, faults
from bigmodel_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file: path.py[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config, metrics and checkpoints.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose config.json differs from this config.")
flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "Multi-process: HOST:PORT of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Compile the train step for the configured mesh and print per-device "
    "memory and FLOPs; no data, no training, nothing written.")
_DRY_RUN_DEVICES = flags.DEFINE_integer(
    "dry_run_devices", None, "--dry_run: plan for this many devices (virtual CPU devices when "
    "the machine has fewer).")
_BUDGET = flags.DEFINE_float("memory_budget_gb", None,
                             "--dry_run: per-device memory budget in GiB; exit 1 if it does not fit.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", 100, "Multi-process: a process silent this long counts as dead and "
    "JAX's distributed service ends the others (exit status 134).")
_PROFILE = flags.DEFINE_string(
    "profile_steps", "", "A:B: write a jax.profiler trace of updates A to B into WORKDIR/profile "
    "(TensorBoard's profile plugin, Perfetto).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Initialize jax.distributed from the environment (TPU VM, SLURM, ...) "
    "even where it is not detected.")


def _dry_run() -> None:
  n = _DRY_RUN_DEVICES.value
  if n is not None:
    if n <= 0:
      raise faults.ConfigError(f"--dry_run_devices must be positive, got {n}")
    _virtual_cpu_devices(n)
  from bigmodel_jax.trainer import planning

  report = planning.dry_run(_CONFIG.value, _BUDGET.value)
  if report.get("fits") is False:
    sys.exit(1)


def _virtual_cpu_devices(n: int) -> None:
  """Plan on n CPU devices: possible only before JAX has started its backends."""
  import jax

  if jax._src.xla_bridge.backends_are_initialized():  # noqa: SLF001
    if jax.device_count() != n:
      raise faults.ConfigError(f"--dry_run_devices={n}: JAX already runs on "
                                   f"{jax.device_count()} devices in this process")
    return
  os.environ["XLA_FLAGS"] = " ".join(
      [f for f in os.environ.get("XLA_FLAGS", "").split()
       if not f.startswith("--xla_force_host_platform_device_count")] +
      [f"--xla_force_host_platform_device_count={n}"])
  jax.config.update("jax_platforms", "cpu")


def init_distributed() -> None:
  """jax.distributed.initialize when this is one of several processes; no-op otherwise.

  On CPU the processes' collectives go through gloo."""
  import jax

  slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  if not (_COORDINATOR.value or _DISTRIBUTED.value or slurm):
    return
  if _COORDINATOR.value and (_NUM_PROCESSES.value is None or _PROCESS_ID.value is None):
    raise faults.ConfigError("--coordinator_address needs --num_processes and --process_id")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU backend only
  if _HEARTBEAT.value <= 0:
    raise faults.ConfigError(f"--heartbeat_timeout_s must be positive, got {_HEARTBEAT.value}")
  jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                             num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                             heartbeat_timeout_seconds=_HEARTBEAT.value)


def main(argv: list[str]) -> None:
  def body() -> None:
    config_lib.check_values(_CONFIG.value)  # bad values fail fast, before JAX loads
    from bigmodel_jax.trainer import train

    if _DRY_RUN.value:
      _dry_run()
      return
    if not _WORKDIR.value:
      raise faults.ConfigError("--workdir is required")
    init_distributed()
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                             allow_config_change=_ALLOW_CONFIG_CHANGE.value,
                             profile_steps=_PROFILE.value)

  cli.run_command(argv, body)


def run() -> None:
  app.run(main, flags_parser=cli.parse_command_line)


if __name__ == "__main__":
  run()
