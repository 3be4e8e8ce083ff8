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

from bigmodel_jax.config import ConfigError
from bigmodel_jax.data import pipeline


def _replicated(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


class DeviceData:
  """The split's arrays and the two epoch orders a step may need, replicated on the mesh."""

  def __init__(self, examples: Any, global_batch: int, seed: int, mesh: jax.sharding.Mesh):
    if not getattr(examples, "in_memory", False) or getattr(examples, "random", False) or (
        getattr(examples, "sampler", None) is not None):
      raise ConfigError("data.on_device needs one training split held in memory (data.cache, or "
                        "a language model's windows) without random augmentation")
    self.n, self.batch = len(examples), global_batch
    self.sharding = NamedSharding(mesh, P())
    self.arrays = jax.tree.map(lambda x: _replicated(np.asarray(x), self.sharding),
                               examples.gather(np.arange(self.n)))
    self._orders = pipeline.GlobalBatch(self.n, global_batch, seed)
    self._epoch, self._order_arrays = None, None

  def inputs(self, done: int) -> tuple[Any, jax.Array]:
    """What the step after `done` updates takes: (arrays, orders of its first epoch and the next)."""
    epoch = done * self.batch // self.n
    if epoch != self._epoch:  # once per epoch
      orders = np.stack([self._orders._order(epoch), self._orders._order(epoch + 1)])
      self._order_arrays, self._epoch = _replicated(orders.astype(np.int32), self.sharding), epoch
    return self.arrays, self._order_arrays

  @staticmethod
  def position(done: int) -> dict[str, int]:
    """The host iterator's state after `done` batches (its element b is global batch b), saved in
    checkpoints so that a run may resume with data.on_device off."""
    return {"next_index": done}


def sample(step: jax.Array, data: tuple[Any, jax.Array], global_batch: int) -> Any:
  """Inside the jitted step: global batch number `step` from the arrays (GlobalBatch's rows)."""
  arrays, orders_2xN = data
  n = orders_2xN.shape[1]
  positions = step * global_batch + jnp.arange(global_batch)
  within = positions % n
  first = positions // n == (step * global_batch) // n
  indices = jnp.where(first, orders_2xN[0][within], orders_2xN[1][within])
  return jax.tree.map(lambda a: a[indices], arrays)
