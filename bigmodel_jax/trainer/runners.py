"""One runner per execution path of the training loop: what a call takes and how it runs.

  JitRunner       host batches through the grain iterator, one jitted call per batch, or per K
                  stacked batches (steps_per_call; single steps where a run starts or ends off
                  a multiple of K)
  OnDeviceRunner  data.on_device: the split lives on the devices, each update samples its batch
  PmapRunner      parallel.strategy=pmap: the state in pmap's layout between calls

The loop (train.py) asks a runner for the next call's size and input, runs the call, and asks
for the data position to checkpoint; checkpoints and evaluation see `canonical(state)`.
"""

import functools
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from bigmodel_jax.data import on_device
from bigmodel_jax.trainer import pmap, sharding, steps
from bigmodel_jax.trainer.build import Build


class JitRunner:
  def __init__(self, config: ml_collections.ConfigDict, built: Build, state_shardings: Any,
               train_iter: Any, total_steps: int, sample: Any = None):
    self.plan, self.train_iter, self.total_steps = built.plan, train_iter, total_steps
    self.k = config.steps_per_call
    # each size compiles on its first use
    self.steps = {k: steps.jit_train_step(built.plan, state_shardings, sample=sample,
                                          steps_per_call=k, **built.step_options)
                  for k in {1, self.k}}
    self.stacked_sharding = jax.sharding.NamedSharding(  # K x B x ...
        built.plan.mesh, jax.sharding.PartitionSpec(None, built.plan.batch_axes))
    self.waited = 0.0  # seconds blocked on the input pipeline (train/input_wait_fraction)

  def _next(self) -> Any:
    t = time.perf_counter()
    batch = next(self.train_iter)
    self.waited += time.perf_counter() - t
    return batch

  def take_waited(self) -> float:
    """Seconds blocked on the input pipeline since the last take."""
    waited, self.waited = self.waited, 0.0
    return waited

  def call_size(self, done: int) -> int:
    """Updates the call after `done` updates makes."""
    return self.k if done % self.k == 0 and done + self.k <= self.total_steps else 1

  def next_batch(self, done: int) -> Any:
    k = self.call_size(done)
    if k == 1:
      return sharding.global_batch(self._next(), self.plan.batch_sharding)
    local = jax.tree.map(lambda *b: np.stack(b), *(self._next() for _ in range(k)))
    return sharding.global_batch(local, self.stacked_sharding)

  def call(self, state: Any, batch: Any, k: int) -> tuple[Any, Any]:
    return self.steps[k](state, batch)

  def position(self, step: int) -> Any:
    """The data position after `step` updates (read before the next call's input)."""
    return self.train_iter.get_state()

  def to_loop(self, state: Any) -> Any:
    return state

  def canonical(self, state: Any) -> Any:
    return state


class OnDeviceRunner(JitRunner):
  def __init__(self, config, built, state_shardings, train_iter, total_steps, examples):
    sample = functools.partial(on_device.sample, global_batch=config.batch_size)
    super().__init__(config, built, state_shardings, train_iter, total_steps, sample=sample)
    self.data = on_device.DeviceData(examples, config.batch_size, config.seed, built.plan.mesh,
                                     config.steps_per_call)

  def next_batch(self, done: int) -> Any:
    return self.data.inputs(done)

  def position(self, step: int) -> Any:
    return self.data.position(step)


class PmapRunner(JitRunner):
  def __init__(self, config, built, state_shardings, train_iter, total_steps):
    self.plan, self.train_iter, self.total_steps, self.k = built.plan, train_iter, total_steps, 1
    self.waited = 0.0
    self.strategy = pmap.Strategy(state_shardings, **built.step_options)

  def next_batch(self, done: int) -> Any:
    return self._next()  # this process's rows

  def call(self, state: Any, batch: Any, k: int) -> tuple[Any, Any]:
    return self.strategy.step(state, batch)

  def to_loop(self, state: Any) -> Any:
    return self.strategy.to_local(state)

  def canonical(self, state: Any) -> Any:
    return self.strategy.to_global(state)


def make(config: ml_collections.ConfigDict, built: Build, state_shardings: Any, train_iter: Any,
         examples: Any, total_steps: int) -> JitRunner:
  if config.parallel.strategy == "pmap":
    return PmapRunner(config, built, state_shardings, train_iter, total_steps)
  if config.data.on_device:
    return OnDeviceRunner(config, built, state_shardings, train_iter, total_steps, examples)
  return JitRunner(config, built, state_shardings, train_iter, total_steps)
