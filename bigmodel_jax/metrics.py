"""Console progress and the train loop's metrics: lines for the user, the progress bar, the
steps/s timer, the buffer of device metrics and a log line's train/ columns (where the rows
go: writers.py).

Only process 0 prints; the others stay quiet.
"""

import math
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


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


class RateTimer:
  """train/steps_per_sec: updates per second of training, the first call (compilation) and the
  pauses for evaluation and checkpoints left out."""

  def __init__(self) -> None:
    self.t_first = self.t_interval = None  # after the first call; the current log interval's start
    self.first_steps = self.timed = 0  # updates in the first call; updates since t_interval
    self.t_end = None

  def called(self, k: int) -> None:
    if self.t_first is None:
      self.t_first = self.t_interval = time.time()
      self.first_steps = k
    else:
      self.timed += k

  def interval_rate(self) -> float | None:
    """Updates per second since the last call of this (None before any were timed)."""
    now = time.time()
    self.interval_s = now - self.t_interval
    rate = self.timed / self.interval_s if self.timed else None
    self.t_interval, self.timed = now, 0
    return rate

  def pause(self) -> "RateTimer":  # `with timer.pause():` evaluation and checkpointing
    return self

  def __enter__(self) -> None:
    self._paused = time.time()

  def __exit__(self, *exc: Any) -> None:
    if self.t_interval is not None:
      self.t_interval += time.time() - self._paused

  def stop(self) -> None:
    self.t_end = time.time()

  def rate(self, trained: int) -> float | None:
    """Updates per second from the end of the first call to stop(), over `trained` updates."""
    if trained <= self.first_steps:
      return None
    return (trained - self.first_steps) / (self.t_end - self.t_first)


@jax.jit
def _stack(per_call: list[Any]) -> Any:
  """Per-call device metrics (scalars, or (K,) from steps_per_call) -> one array per metric in
  step order."""
  return jax.tree.map(lambda *xs: jnp.concatenate([jnp.atleast_1d(x) for x in xs]), *per_call)


class MetricBuffer:
  """The device metrics of the calls since the last fetch. Fetching them one by one costs about
  as much as a small step on a CPU, and stacking a whole log interval at once compiles a
  function of that many arguments (0.8 s for 200 steps of 7 metrics): so every CHUNK calls are
  stacked on the device as they come (one small function, compiled once) and a fetch stacks the
  chunks and the rest into one array per metric."""

  CHUNK = 16

  def __init__(self) -> None:
    self.steps: list[int] = []  # the step number of every value
    self.chunks: list[Any] = []
    self.recent: list[Any] = []

  def __bool__(self) -> bool:
    return bool(self.steps)

  def add(self, first_step: int, count: int, metrics: Any) -> None:
    self.steps.extend(range(first_step, first_step + count))
    self.recent.append(metrics)
    if len(self.recent) == self.CHUNK:
      self.chunks.append(_stack(self.recent))
      self.recent = []

  def warm_up(self, metrics: Any, calls: int) -> None:
    """Compiles the stacking that `calls` calls with metrics like these and their fetch need (run
    before training is timed, like the step's own compilation)."""
    chunk = _stack([metrics] * self.CHUNK)
    jax.block_until_ready(_stack([chunk] * (calls // self.CHUNK) + [metrics] * (calls % self.CHUNK)))

  def fetch(self) -> tuple[list[int], dict[str, np.ndarray]]:
    """(step numbers, one host array per metric in step order); empties the buffer."""
    out = self.steps, jax.device_get(_stack(self.chunks + self.recent))
    self.__init__()
    return out


def train_row(fetched: dict[str, np.ndarray], nan_policy: str) -> dict[str, float]:
  """The train/ columns of a log line, from the interval's stacked metrics: means over its
  finite steps."""
  finite = fetched["finite"] if fetched["finite"].any() else np.ones_like(fetched["finite"])
  averaged = [k for k in fetched if k not in ("finite", "nonfinite_updates", "learning_rate")]
  row = {f"train/{k}": float(np.mean(fetched[k][finite])) for k in averaged}
  row["train/learning_rate"] = float(fetched["learning_rate"][-1])
  if nan_policy == "skip":
    row["train/nonfinite_updates"] = int(fetched["nonfinite_updates"][-1])
  return row
