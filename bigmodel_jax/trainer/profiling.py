"""--profile_steps=A:B: a jax.profiler trace of training updates A to B (counted from 1) in
WORKDIR/profile, for TensorBoard's profile plugin (plugins/profile/RUN/*.xplane.pb) and Perfetto
(perfetto_trace.json.gz: ui.perfetto.dev). Each call of the train step is annotated as step N
("train"); the compiled step is named after its function (train_step; several updates per call:
several). Profiling starts before the call that makes update A and stops after the one that
makes update B, once its results are computed.
"""

import contextlib
from typing import Any

import jax

from bigmodel_jax import storage
from bigmodel_jax.faults import ConfigError


class Window:
  def __init__(self, first: int = 0, last: int = 0, directory: str = ""):
    self.first, self.last, self.directory = first, last, directory
    self.active = False

  @classmethod
  def parse(cls, spec: str, workdir: str) -> "Window":
    if not spec:
      return cls()
    try:
      first, last = (int(v) for v in spec.split(":"))
    except ValueError:
      first = last = 0
    if not 1 <= first <= last:
      raise ConfigError(f"--profile_steps={spec}: give A:B, the first and last update to trace, "
                        "1 <= A <= B (e.g. 10:15)")
    return cls(first, last, storage.join(workdir, "profile"))

  def before(self, first_update: int, after_call: int) -> None:
    """Starts the trace before the call that makes updates first_update..after_call."""
    if self.directory and not self.active and first_update <= self.last and after_call >= self.first:
      self._staged = storage.staged(self.directory)  # in a bucket: traced locally, then uploaded
      jax.profiler.start_trace(self._staged.__enter__(), create_perfetto_trace=True)
      self.active = True

  def annotate(self, step: int) -> Any:
    if not self.active:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def after(self, step: int, state: Any) -> None:
    if self.active and step >= self.last:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self._staged.__exit__(None, None, None)
      self.active = False
      self.directory = ""  # once per run
