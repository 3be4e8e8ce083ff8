"""The classic data-parallel strategy (config.parallel.strategy="pmap"): `jax.pmap` over this
process's devices, the state replicated on each, sums over the mapped axis with `lax.psum` and
BatchNorm statistics synchronized over it (the model's layout.batch_norm_axis), so an update
equals jit's on the same global batch.

The loop keeps the state in pmap's layout (a leading axis of local devices); checkpoints and
evaluation see the canonical, mesh-replicated state (`to_global`), so a pmap run's checkpoint
resumes under jit and the other way round.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bigmodel_jax.trainer import steps

AXIS = "batch"


class Strategy:
  def __init__(self, state_shardings: Any, **step_kwargs: Any):
    self.state_shardings = state_shardings
    self.devices = jax.local_devices()

    def step(state, batch):  # the model's BatchNorm syncs over AXIS (build.layout_for)
      return steps.train_step(state, batch, axis_name=AXIS, **step_kwargs)

    self._step = jax.pmap(step, axis_name=AXIS, devices=self.devices, donate_argnums=0)

  def to_local(self, state: Any) -> Any:
    """Mesh-replicated state -> one copy per local device (pmap's layout: a leading axis)."""
    stacked = NamedSharding(Mesh(np.array(self.devices), (AXIS,)), P(AXIS))

    def one(x):
      copy = x.addressable_data(0)[None]
      return jax.make_array_from_single_device_arrays(
          (len(self.devices), *x.shape), stacked, [jax.device_put(copy, d) for d in self.devices])
    return jax.tree.map(one, state)

  def to_global(self, state: Any) -> Any:
    """pmap's layout -> the mesh-replicated state (the copies are equal)."""
    def one(x, sharding):
      by_device = {s.device: s.data for s in x.addressable_shards}
      return jax.make_array_from_single_device_arrays(
          x.shape[1:], sharding, [by_device[d].reshape(x.shape[1:])
                                  for d in sharding.addressable_devices_indices_map(x.shape[1:])])
    return jax.tree.map(one, state, self.state_shardings)

  def step(self, state: Any, local_batch: dict[str, np.ndarray]) -> tuple[Any, Any]:
    n = len(self.devices)
    split = jax.tree.map(lambda x: x.reshape(n, x.shape[0] // n, *x.shape[1:]), local_batch)
    state, metrics = self._step(state, split)
    return state, jax.tree.map(lambda m: m[0], metrics)
