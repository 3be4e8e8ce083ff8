"""Where a run's logged rows go: one Writer interface, the writers by name (config.writers).

  jsonl        WORKDIR/metrics.jsonl, one JSON object per logged step (always on: resume and
               the report read it). Locally lines are appended; in a bucket (no appends there)
               the file is rewritten whole, at most every FLUSH_S seconds, at each checkpoint
               (flush) and at the end
  tensorboard  event files in WORKDIR/tensorboard (tensorboardX); in a bucket written locally
               and copied there at the same moments
  wandb        a Weights & Biases run (pip install -e '.[wandb]'), its files under
               WORKDIR/wandb (a bucket workdir: ./wandb); WANDB_MODE=offline keeps it local,
               WANDB_PROJECT names the project (default bigmodel_jax). A resumed run continues
               the same W&B run (its id comes from the workdir)

A writer that fails ends the run as a failed write does (faults.FileError, exit 6, one line);
checkpoints are not touched. Only process 0 writes. Imports nothing heavy (config.py reads
WRITERS before JAX is imported).
"""

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Protocol

from bigmodel_jax import faults, storage


class Writer(Protocol):
  def resume_at(self, step: int) -> None:
    """A run resumed from the checkpoint of `step`: rows past it will be logged again."""

  def write(self, step: int, row: dict[str, Any]) -> None:
    """One logged step's row: plain JSON values (json_value), NaN as None."""

  def flush(self) -> None:
    """At each checkpoint: everything written so far is where it goes."""

  def close(self) -> None:
    """At the end of the run (or before a preempted run exits)."""


def json_value(v: Any) -> Any:
  """A plain JSON value: numpy scalars unwrapped, NaN and infinities as null."""
  v = v.item() if hasattr(v, "item") else v
  return None if isinstance(v, float) and not math.isfinite(v) else v


class Jsonl:
  FLUSH_S = 10.0

  def __init__(self, workdir: str, config: dict[str, Any]):
    self.path = storage.join(workdir, "metrics.jsonl")
    self.remote = storage.is_remote(workdir)
    self._lines: list[str] = []  # in a bucket: the file's lines
    self._unflushed = False
    self._flushed_at = 0.0  # the first line is written at once: the run is seen to start

  def resume_at(self, step: int) -> None:
    if not storage.exists(self.path):
      return
    text = storage.read_text(self.path)
    self._lines = [line + "\n" for line in text.splitlines()
                   if line.strip() and _line_step(line) <= step]
    storage.write(self.path, "".join(self._lines))

  def write(self, step: int, row: dict[str, Any]) -> None:
    line = json.dumps({"step": int(step), **row}) + "\n"
    if not self.remote:
      with open(self.path, "a") as f:
        f.write(line)
      return
    self._lines.append(line)
    self._unflushed = True
    if time.time() - self._flushed_at >= self.FLUSH_S:
      self.flush()

  def flush(self) -> None:
    if self._unflushed:
      storage.write(self.path, "".join(self._lines))
      self._unflushed, self._flushed_at = False, time.time()

  def close(self) -> None:
    self.flush()


def _line_step(line: str) -> int:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return sys.maxsize  # a torn last line from a killed run: dropped


class TensorBoard:
  def __init__(self, workdir: str, config: dict[str, Any]):
    self.dir = storage.join(workdir, "tensorboard")
    # in a bucket: written here and copied (storage.write: its retries, then a one-line error;
    # tensorboardX's own gs:// writer retries for minutes in its exit hook)
    self._local = tempfile.mkdtemp(prefix="bigmodel-tb-") if storage.is_remote(workdir) else ""
    self._tb = None

  def resume_at(self, step: int) -> None:
    pass  # TensorBoard shows the newest event of a step

  def write(self, step: int, row: dict[str, Any]) -> None:
    if self._tb is None:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(self._local or self.dir, flush_secs=30)
    for k, v in row.items():
      if isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, int(step))

  def flush(self) -> None:
    if self._tb is None:
      return
    self._tb.flush()
    for name in os.listdir(self._local) if self._local else ():
      with open(os.path.join(self._local, name), "rb") as f:
        storage.write(storage.join(self.dir, name), f.read())

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
    self.flush()
    if self._local:
      shutil.rmtree(self._local, ignore_errors=True)


class Wandb:
  def __init__(self, workdir: str, config: dict[str, Any]):
    try:
      import wandb
    except ImportError:
      raise faults.ConfigError("config.writers: wandb is not installed; pip install -e "
                               "'.[wandb]' (or leave wandb out of config.writers)") from None
    local = not storage.is_remote(workdir)
    run_id = hashlib.sha256(storage.absolute(workdir).encode()).hexdigest()[:16]
    self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "bigmodel_jax"),
                           name=os.path.basename(workdir.rstrip("/")), id=run_id,
                           resume="allow", dir=workdir if local else None, config=config)

  def resume_at(self, step: int) -> None:
    pass  # W&B keeps the first row of a step; the steps logged again are dropped there

  def write(self, step: int, row: dict[str, Any]) -> None:
    self._run.log(row, step=int(step))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    self._run.finish()


WRITERS: dict[str, type] = {"jsonl": Jsonl, "tensorboard": TensorBoard, "wandb": Wandb}
DEFAULT = "jsonl,tensorboard"


def names_of(text: str) -> list[str]:
  """config.writers ("jsonl,tensorboard,wandb") -> the names; ConfigError naming a bad one."""
  names = [n.strip() for n in text.split(",") if n.strip()]
  unknown = [n for n in names if n not in WRITERS]
  if unknown:
    raise faults.ConfigError(f"config.writers: unknown writer {', '.join(unknown)}; known: "
                             f"{', '.join(WRITERS)}")
  if "jsonl" not in names:
    raise faults.ConfigError(f"config.writers={text!r} must include jsonl (the workdir's "
                             "metrics.jsonl: resume and the report read it)")
  return list(dict.fromkeys(names))


class Writers:
  """The config's writers as one Writer; on any process but 0 it writes nothing. A writer that
  fails but for a file's error (those name the file) is a faults.FileError naming the writer."""

  def __init__(self, names: str, workdir: str, config: dict[str, Any], active: bool):
    self._writers = {}
    for name in names_of(names) if active else ():
      self._writers[name] = self._guarded(name, "start", lambda: WRITERS[name](workdir, config))

  def _guarded(self, name: str, what: str, fn: Any) -> Any:
    try:
      return fn()
    except (faults.RunStopped, faults.ConfigError, OSError):
      raise  # a failed write of a file: the command names the file (cli.py)
    except Exception as e:  # noqa: BLE001 (a writer's library fails in its own ways)
      raise faults.FileError(f"writer {name} could not {what}: {type(e).__name__}: "
                             f"{faults.first_line(e)}") from e

  def _each(self, what: str, method: str, *args: Any) -> None:
    for name, writer in self._writers.items():
      self._guarded(name, what, lambda: getattr(writer, method)(*args))

  def resume_at(self, step: int) -> None:
    self._each(f"resume at step {step}", "resume_at", step)

  def write(self, step: int, row: dict[str, Any]) -> None:
    row = {k: json_value(v) for k, v in row.items()}
    self._each(f"write step {step}", "write", step, row)

  def flush(self) -> None:
    self._each("flush", "flush")

  def close(self) -> None:
    self._each("close", "close")
