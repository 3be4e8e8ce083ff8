"""The contract every command shares (main, summary, sample, sweep, report): absl/argparse
parsing where every failure is one line on stderr and exit status 2, and the error handling of
a command's body (faults.py's exit statuses for a run that stops)."""

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import ml_collections

from bigmodel_jax import faults
from bigmodel_jax.config import flatten, load_config_file, nearest_keys, to_dict
from bigmodel_jax.faults import ConfigError


def _override_error(argv: list[str], config: ml_collections.ConfigDict) -> str | None:
  """Names the first --config.KEY override that is not a key of the config, with near names."""
  valid = sorted(flatten(to_dict(config)))
  for a in argv:
    if not a.startswith("--config."):
      continue
    key = a[len("--config."):].split("=", 1)[0]
    if key not in valid and not any(v.startswith(key + ".") for v in valid):
      near = nearest_keys(key, valid)
      hint = f"; nearest: {', '.join(near)}" if near else ""
      return f"unknown config key '{key}'{hint}"
  return None


def _config_spec(argv: list[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a[len("--config="):]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def parse_command_line(argv: list[str]) -> list[str]:
  """absl flags parser for main.py: every failure is one line on stderr and exit status 2."""
  from absl import flags

  try:
    return _parse_flags(argv, flags.FLAGS)
  except ConfigError as e:
    if "--traceback" in argv:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def parse_config(spec: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """The config that `main --config=SPEC OVERRIDES...` runs (a sweep's point), parsed the same
  way; ConfigError names what is wrong."""
  from absl import flags
  from ml_collections import config_flags

  argv = ["bigmodel_jax.main", f"--config={spec}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  _parse_flags(argv, flag_values)
  return flag_values.config


def _parse_flags(argv: list[str], flag_values: Any) -> list[str]:
  spec = _config_spec(argv)
  if spec is None:
    raise ConfigError("--config is required, e.g. --config=configs/mnist1d.py:cnn")
  base = load_config_file(spec)  # import errors named here rather than deep in config_flags
  try:
    rest = flag_values(argv)
  except Exception as e:
    unknown = _override_error(argv, base)
    raise ConfigError(unknown or str(e).splitlines()[0]) from e
  _given_duration_wins(argv, flag_values.config)
  return rest


def _given_duration_wins(argv: list[str], config: ml_collections.ConfigDict) -> None:
  """A config file's total_epochs, when set, wins over its total_steps; on the command line the
  one given wins (--config.total_steps=N trains N steps on an epoch-based config)."""
  given = {key for key in ("total_steps", "total_epochs")
           if any(a.split("=", 1)[0] == f"--config.{key}" for a in argv)}
  if len(given) == 2:
    raise ConfigError("--config.total_steps and --config.total_epochs both set the run's length; "
                      "give one of them")
  if given == {"total_steps"}:
    config.total_epochs = None


class ArgumentParser(argparse.ArgumentParser):
  """argparse for the plain commands (sweep, report): a usage error is a ConfigError."""

  def error(self, message: str) -> None:
    raise ConfigError(message)


def run_script(main: Callable[[list[str]], int | None]) -> None:
  """Entry point of an argparse command: run_command's contract, then main's exit status."""
  from absl import flags

  flags.FLAGS(sys.argv[:1])  # run_command reads absl's verbosity flag
  status = 0

  def body() -> None:
    nonlocal status
    status = main(sys.argv[1:]) or 0

  run_command(sys.argv[:1], body)
  sys.exit(status)


def run_command(argv: list[str], body: Callable[[], None]) -> None:
  """The contract of every command (main, summary, sample): Orbax's and TFDS's INFO logs off
  unless --verbosity is given, no stray arguments, and a ConfigError printed as one line with
  exit status 2; a run that stops for a fault (faults.RunStopped, a file that cannot be written)
  prints one line and exits with its own status (--traceback, where a command defines it, shows
  the traceback instead)."""
  from absl import flags, logging

  f = flags.FLAGS
  if not f["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    if len(argv) > 1:
      raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    body()
  except (ConfigError, faults.RunStopped, OSError) as e:
    if isinstance(e, OSError) and e.filename is None and not faults.is_disk_error(e):
      raise  # not about a file (a connection, say): the traceback says more
    if "traceback" in f and f.traceback:
      raise
    if isinstance(e, OSError):  # a file the run writes (or reads) is refused by the system
      e = faults.write_error(os.fsdecode(e.filename or "a file"), e)
    faults.silence_background_errors()  # Orbax's or Grain's threads, cut short by the exit
    print(f"{'preempted' if isinstance(e, faults.Preempted) else 'error'}: {e}", file=sys.stderr,
          flush=True)
    sys.exit(getattr(e, "exit_code", 2))
