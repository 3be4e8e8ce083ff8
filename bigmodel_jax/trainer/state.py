"""The TrainState pytree and its creation directly in sharded form."""

import hashlib
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bigmodel_jax.trainer import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far
  params: Any
  opt_state: Any
  model_state: Any  # mutable collections other than params (e.g. batch_stats); {} if none
  rng: jax.Array  # raw uint32 key; step k uses fold_in(rng, k), so resume needs nothing else
  nonfinite_updates: jax.Array  # int32 scalar: updates skipped for a non-finite loss or gradient


def init_fn(model: nn.Module, tx: optax.GradientTransformation, example_inputs: Any,
            seed: int, extra_state: Callable[[Any], dict] | None = None
            ) -> Callable[[], TrainState]:
  """The function that creates the state, its leaves boxed with their logical axis names.
  extra_state(example_inputs): more model-state collections (Objective.extra_state)."""

  def init() -> TrainState:
    params_rng, dropout_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    variables = model.init({"params": params_rng, "dropout": dropout_rng}, example_inputs,
                           train=False)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      model_state={**variables, **(extra_state(example_inputs) if extra_state
                                                   else {})}, rng=state_rng,
                      nonfinite_updates=jnp.zeros((), jnp.int32))

  return init


def create(model: nn.Module, tx: optax.GradientTransformation, example_inputs: jax.Array,
           seed: int, plan: "sharding.Plan", extra_state: Callable[[Any], dict] | None = None
           ) -> tuple[TrainState, TrainState]:
  """(state, shardings): parameters are created already sharded, never whole on one device.

  `jax.eval_shape` traces init to read the parameters' logical axis names; `sharding.py` maps
  them to mesh shardings; init then runs under jit with those output shardings.
  """
  init = init_fn(model, tx, example_inputs, seed, extra_state)
  shardings = plan.state_shardings(jax.eval_shape(init))
  state = jax.jit(lambda: nn.unbox(init()), out_shardings=shardings)()
  return state, shardings


def planned(model: nn.Module, tx: optax.GradientTransformation, example_inputs: Any,
            plan: "sharding.Plan", extra_state: Callable[[Any], dict] | None = None) -> TrainState:
  """The state as ShapeDtypeStructs with its shardings, nothing allocated (for --dry_run)."""
  boxed = jax.eval_shape(lambda x: init_fn(model, tx, x, 0, extra_state)(), example_inputs)
  return abstract(plan.state_shardings(boxed), nn.unbox(boxed))


def abstract(state_shardings: TrainState, state: TrainState) -> TrainState:
  """ShapeDtypeStructs with shardings: the restore target for a checkpoint of `state`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, state_shardings)


def num_params(params: Any) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def params_digest(params: Any) -> str | None:
  """sha256 over every parameter's bytes in tree order: equal digests, bit-identical models.

  None when the parameters are not all addressable from this process (multi-host).
  """
  leaves = jax.tree.leaves(params)
  if not all(x.is_fully_addressable for x in leaves):
    return None
  h = hashlib.sha256()
  for x in jax.device_get(leaves):
    h.update(x.tobytes())
  return h.hexdigest()
