"""Metric writers (metrics.jsonl, TensorBoard) and console progress.

Only process 0 writes files or prints; the others stay quiet.
"""

import json
import math
import os
import sys
import time
from typing import Any

import jax


class MetricWriter:
  """Appends {"step": ..., "train/loss": ...} lines to WORKDIR/metrics.jsonl and TensorBoard."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tensorboard")
    self._tb = None

  def truncate_after(self, step: int) -> None:
    """Drops lines past `step`: a resumed run logs those steps again from its checkpoint."""
    if not self.active or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and _line_step(line) <= step]
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, metrics: dict[str, Any]) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: json_value(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is None:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(self.tb_dir, flush_secs=30)
    for k, v in row.items():
      if k != "step" and isinstance(v, (int, float)):
        self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _line_step(line: str) -> int:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return sys.maxsize  # a torn last line from a killed run: dropped


def json_value(v: Any) -> Any:
  """A plain JSON value: numpy scalars unwrapped, NaN and infinities as null."""
  v = v.item() if hasattr(v, "item") else v
  return None if isinstance(v, float) and not math.isfinite(v) else v


_CLEAR_LINE = "\r\033[K"  # carriage return, erase to the end of the line (over a progress bar)


def console(text: str) -> None:
  """A line for the user, from process 0 only; clears a progress bar on a terminal first."""
  if jax.process_index() == 0:
    print(f"{_CLEAR_LINE if sys.stdout.isatty() else ''}{text}", flush=True)


class Progress:
  """A one-line progress bar on a terminal; plain lines at each log step otherwise (log files)."""

  def __init__(self, total_steps: int, start_step: int):
    self.total, self.start = total_steps, start_step
    self.active = jax.process_index() == 0
    self.tty = sys.stdout.isatty()
    self.t0 = time.time()
    self.last_draw = 0.0
    self.loss = float("nan")

  def update(self, step: int) -> None:
    """Called every step; redraws the bar at most 5 times a second."""
    now = time.time()
    if self.active and self.tty and (now - self.last_draw > 0.2 or step == self.total):
      self.last_draw = now
      done = step / self.total
      bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
      print(f"\r[{bar}] {step}/{self.total} loss {self.loss:.4f} {self._rate(step)}",
            end="", flush=True)

  def log(self, step: int, metrics: dict[str, Any]) -> None:
    """Called at log steps with the numbers just written to metrics.jsonl."""
    self.loss = metrics.get("train/loss", self.loss)
    if not self.active:
      return
    if self.tty and not any(k.startswith("eval/") for k in metrics):
      return  # the bar shows it
    text = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{self._clear()}step {step}/{self.total} {text} {self._rate(step)}", flush=True)

  def _clear(self) -> str:
    return _CLEAR_LINE if self.tty else ""

  def _rate(self, step: int) -> str:
    elapsed = time.time() - self.t0
    rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("inf")
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
    return f"({rate:.1f} steps/s, ETA {eta_text})"
