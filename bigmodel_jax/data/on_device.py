"""data.on_device: a small in-memory training split kept whole on every device, each step taking
its global batch inside the jitted step (no host work per step).

The order is the host pipeline's (pipeline.GlobalBatch: a permutation per epoch from the seed;
global batch b covers stream positions [b * B, (b + 1) * B)), so a run gives the same batches
either way, and the data position is the step itself. Only for splits in memory without random
augmentation (data.cache, or a language model's windows) and one data set.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bigmodel_jax.data import pipeline
from bigmodel_jax.faults import ConfigError


def _replicated(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


class DeviceData:
  """The split's arrays and the epoch orders a call may need, replicated on the mesh."""

  def __init__(self, examples: Any, global_batch: int, seed: int, mesh: jax.sharding.Mesh,
               steps_per_call: int = 1):
    if not getattr(examples, "in_memory", False) or getattr(examples, "random", False) or (
        getattr(examples, "sampler", None) is not None):
      raise ConfigError("data.on_device needs one training split held in memory (data.cache, or "
                        "a language model's windows) without random augmentation")
    self.n, self.batch = len(examples), global_batch
    self.sharding = NamedSharding(mesh, P())
    self.arrays = jax.tree.map(lambda x: _replicated(np.asarray(x), self.sharding),
                               examples.gather(np.arange(self.n)))
    self._orders = pipeline.GlobalBatch(self.n, global_batch, seed)
    # a call's steps_per_call batches start in one epoch and reach into at most this many more
    self._epochs = (steps_per_call * global_batch - 1) // self.n + 2
    self._epoch, self._inputs = None, None

  def inputs(self, done: int) -> tuple[Any, jax.Array, jax.Array]:
    """What the call after `done` updates takes: the arrays, the orders of the epoch e that batch
    `done` starts in and of the next ones, and (b0, c): b0 the batch epoch e begins in, c =
    b0 * B - e * n (-B < c <= 0), so that batch s takes positions (s - b0) * B + c + [0, B)
    counted from the start of epoch e. Changes once per epoch."""
    epoch = done * self.batch // self.n
    if epoch != self._epoch:
      orders = np.stack([self._orders._order(epoch + e) for e in range(self._epochs)])
      b0 = epoch * self.n // self.batch
      start = np.array([b0, b0 * self.batch - epoch * self.n], np.int32)
      self._inputs = (self.arrays, _replicated(orders.astype(np.int32), self.sharding),
                      _replicated(start, self.sharding))
      self._epoch = epoch
    return self._inputs

  @staticmethod
  def position(done: int) -> dict[str, int]:
    """The host iterator's state after `done` batches (its element b is global batch b), saved in
    checkpoints so that a run may resume with data.on_device off."""
    return {"next_index": done}


def sample(step: jax.Array, data: tuple[Any, jax.Array, jax.Array], global_batch: int) -> Any:
  """Inside the jitted step: global batch number `step` from the arrays (GlobalBatch's rows).
  Positions are counted from the start of the inputs' first epoch, so they stay small (int32)
  in long runs."""
  arrays, orders_ExN, start = data
  n = orders_ExN.shape[1]
  offset = (step - start[0]) * global_batch + start[1] + jnp.arange(global_batch)
  indices = orders_ExN[offset // n, offset % n]
  return jax.tree.map(lambda a: a[indices], arrays)
