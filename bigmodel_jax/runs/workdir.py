"""A run's workdir: the checks before anything is written, its creation, and atomic JSON files.

What a workdir holds and how runs resume in it: WORKSPACE.md.
"""

import contextlib
import glob
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections

from bigmodel_jax import config as config_lib
from bigmodel_jax import faults, metrics, storage
from bigmodel_jax.data import tokenizer
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.runs import load


def check(workdir: str, config: ml_collections.ConfigDict, allow_change: bool) -> None:
  """Read-only checks: the workdir is usable and, if it holds a run, this config matches it."""
  if storage.is_remote(workdir):
    storage.check_bucket(workdir, "workdir")
  else:
    _check_local(workdir)
  if storage.exists(storage.join(workdir, load.CONVERTED)):
    raise ConfigError(f"workdir {workdir} holds converted weights ({load.CONVERTED}); train in a "
                      f"new workdir with --config.init_from={workdir}")
  if not storage.exists(storage.join(workdir, "config.json")) or allow_change:
    return
  try:
    old = load.read_config(workdir)
  except ConfigError as e:
    raise ConfigError(f"{e}; use another workdir") from e
  changed = config_lib.changed_keys(config_lib.to_dict(old), config_lib.to_dict(config))
  if changed:
    raise ConfigError(f"workdir {workdir} holds a run with a different config ({', '.join(changed)}"
                      f"); use another workdir, or --allow_config_change to resume it anyway")


def _check_local(workdir: str) -> None:
  try:
    os.path.abspath(workdir).encode("utf-8")
  except UnicodeEncodeError as e:  # bytes that are not UTF-8 (Python keeps them as surrogates)
    raise ConfigError(f"workdir {os.path.abspath(workdir)!a} is not valid UTF-8 (checkpoints "
                      "need UTF-8 paths); use another name") from e
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"workdir {workdir} exists and is not a directory")
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(os.path.abspath(existing))
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"workdir {workdir} is not writable ({existing})")


def create(workdir: str) -> None:
  """The run's first write. A workdir that cannot be created is bad input (exit 2); missing
  parent directories are created and named on the console. A bucket has no directories."""
  if storage.is_remote(workdir):
    return
  absolute = os.path.abspath(workdir)
  missing = []  # the parent directories that do not exist yet, outermost first
  parent = os.path.dirname(absolute)
  while not os.path.exists(parent):
    missing.insert(0, parent)
    parent = os.path.dirname(parent)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"workdir {workdir} cannot be created: {faults.os_error_text(e)}") from e
  if missing:
    metrics.console(f"Created the workdir's missing parent directories: {', '.join(missing)}")


def write_json(path: str, obj: Any) -> None:
  """Whole (storage.write), from process 0 only."""
  if jax.process_index() == 0:
    storage.write(path, json.dumps(obj, indent=2))


def keep_tokenizer(workdir: str, path: str) -> None:
  """A copy of the run's tokenizer as WORKDIR/tokenizer.json or tokenizer.model
  (data/tokenizer.FILES: sample and convert read it)."""
  if path and jax.process_index() == 0:
    storage.write(storage.join(workdir, tokenizer.file_name(path)), storage.read_bytes(path))


def check_new_directory(path: str, flag: str) -> None:
  storage.check_bucket(path, flag)
  if storage.isfile(path) or storage.listdir(path):
    raise ConfigError(f"{flag} {path} exists and is not empty; choose a new directory")


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's
    return True
  return True


@contextlib.contextmanager
def whole_directory(path: str, last: tuple[str, ...]) -> Iterator[str]:
  """Yields a temporary directory to fill; `path` (new or empty) gets its contents if the block
  succeeds: the directory appears whole or not at all. Locally PATH.tmpPID beside it, renamed
  (those that processes killed while writing left, whose PID no longer runs, are removed); for a
  URL a local temporary directory uploaded with the files named in `last` (those readers look
  for: config.json) after the others."""
  if storage.is_remote(path):
    with storage.staged(path, last) as tmp:
      yield tmp
    return
  prefix = f"{path.rstrip('/')}.tmp"
  for stale in glob.glob(glob.escape(prefix) + "*"):  # left by a process killed while writing
    pid = stale[len(prefix):]
    if pid.isdigit() and not _running(int(pid)):
      shutil.rmtree(stale, ignore_errors=True)
  tmp = f"{prefix}{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    os.makedirs(tmp)
    yield tmp
    if os.path.isdir(path):
      os.rmdir(path)  # empty (checked by the caller)
    os.rename(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
