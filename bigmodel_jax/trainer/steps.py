"""Pure train and eval steps of any objective (objectives/). Everything static (objective,
optimizer, schedule) is bound with functools.partial before jit; no config object reaches a
traced function."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from bigmodel_jax.data import images
from bigmodel_jax.objectives.base import Objective
from bigmodel_jax.trainer import sharding
from bigmodel_jax.trainer.state import TrainState

# "inputs" B x ... (seq2seq: {"encoder", "decoder"}), "label" B (classes) or B x L (next tokens,
# answer bytes), int32; seq2seq also "weights" B x L (0 on padding); eval also "mask" B.
Batch = dict[str, Any]


def train_step(state: TrainState, batch: Batch, *, objective: Objective,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               grad_accum_steps: int = 1, compute_dtype: Any = None,
               micro_sharding: Any = None, axis_name: str | None = None,
               normalize: Any = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on the batch, of the objective's loss.

  The loss is sum(loss * weight) / sum(weight) over the whole batch, so that
  grad_accum_steps > 1 (the batch split into that many micro-batches, gradients summed in a scan)
  is the same update as one large batch; a model's mutable state (BatchNorm averages) is updated
  once per micro-batch. micro_sharding keeps each micro-batch spread over all data-parallel
  devices. axis_name: under pmap, the named axis that sums are taken over (lax.psum), so the
  update equals jit's over the global batch. compute_dtype (mixed precision): parameters and
  floating inputs are cast to it for the forward pass; the float32 parameters, their gradients,
  the optimizer and the loss stay float32. normalize: uint8 images -> float32 (data.scale, mean,
  std), here on the device rather than on the host (images.Normalize).
  """
  batch = normalized(batch, normalize)
  rng = jax.random.fold_in(state.rng, state.step)
  psum = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
  label_weights = objective.weights(batch)  # per row (or label: B x L); 0 on padding
  total_weight = jnp.maximum(psum(jnp.sum(label_weights)), 1)

  def grad_fn(params, model_state, micro, micro_rng):
    return objective.loss_and_grads(params, model_state, micro, micro_rng, compute_dtype,
                                    total_weight)

  data = {**batch, "weights": label_weights}
  if grad_accum_steps == 1:
    (loss, (sums, model_state)), grads = grad_fn(state.params, state.model_state, data, rng)
  else:
    def split(x):  # B x ... -> k x B/k x ...: micro-batch i takes rows i, i + k, ... (every device)
      x = x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1)
      if micro_sharding is not None:
        x = jax.lax.with_sharding_constraint(x, micro_sharding)
      return x

    def body(carry, xs):
      grads, loss, sums, model_state = carry
      micro, i = xs
      (l, (s, model_state)), g = grad_fn(state.params, model_state, micro,
                                         jax.random.fold_in(rng, i))
      return (jax.tree.map(jnp.add, grads, g), loss + l, jax.tree.map(jnp.add, sums, s),
              model_state), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    micro_shapes = jax.eval_shape(lambda: grad_fn(
        state.params, state.model_state, jax.tree.map(lambda x: split(x)[0], data), rng))
    zero_sums = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), micro_shapes[0][1][0])
    (grads, loss, sums, model_state), _ = jax.lax.scan(
        body, (zeros, jnp.zeros((), jnp.float32), zero_sums, state.model_state),
        (jax.tree.map(split, data), jnp.arange(grad_accum_steps)))
  if axis_name:
    grads, loss = psum(grads), psum(loss)
    model_state = jax.lax.pmean(model_state, axis_name)  # identical already when BN syncs
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  # A non-finite loss, gradient or update (Adam without epsilon, an infinite learning rate) leaves
  # the state as it was, the step moving on; the trainer stops or counts it (nan_policy). One sum
  # per leaf checks both: 0 * u is NaN where u is not finite (cheaper than a norm of the updates).
  grad_norm = jnp.sqrt(sum(jax.tree.leaves(jax.tree.map(
      lambda g, u: jnp.sum(jnp.square(g) + 0 * u), grads, updates))))
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(optax.apply_updates(state.params, updates), state.params),
      opt_state=keep(opt_state, state.opt_state), model_state=keep(model_state, state.model_state),
      nonfinite_updates=state.nonfinite_updates + (~finite).astype(jnp.int32))
  metrics = {
      "loss": loss,
      **{k: psum(v) / total_weight for k, v in sums.items()},
      "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
      "grad_norm": grad_norm,
      "finite": finite,
      "nonfinite_updates": new_state.nonfinite_updates,
  }
  return new_state, metrics


EVAL_STREAM = 2**31 - 1  # eval's random numbers (VAE samples, diffusion noise): apart from steps'


def normalized(batch: Batch, normalize: Any) -> Batch:
  """The batch with uint8 "inputs" normalized (a pipeline's images); others as they are."""
  inputs = batch.get("inputs")
  if normalize is None or getattr(inputs, "dtype", None) != jnp.uint8:
    return batch
  return {**batch, "inputs": normalize(inputs)}


def eval_step(state: TrainState, batch: Batch, index: jax.Array, *, objective: Objective,
              compute_dtype: Any = None, normalize: Any = None) -> dict[str, jax.Array]:
  """Sums over the real (mask 1) examples of the objective's per-example metrics; the caller
  divides by "count" at the end. Values named "collect/..." come back per row, with
  "collect/mask", for metrics of the whole split (retrieval: Objective.finish_collected).
  index: the batch's number in the split (its random numbers, the same at every evaluation)."""
  batch = normalized(batch, normalize)
  rng = jax.random.fold_in(jax.random.fold_in(state.rng, EVAL_STREAM), index)
  per_example = objective.evaluate({"params": state.params, **state.model_state}, batch, rng,
                                   compute_dtype)
  mask_B = batch["mask"]
  sums = {k: jnp.sum(v * mask_B) for k, v in per_example.items() if not k.startswith("collect/")}
  rows = {k: v for k, v in per_example.items() if k.startswith("collect/")}  # whole split's
  if rows:
    rows["collect/mask"] = mask_B
  return {**sums, "count": jnp.sum(mask_B), **rows}


def step_options(config: ml_collections.ConfigDict, objective: Objective, tx: Any,
                 schedule: Any) -> dict[str, Any]:
  """The static arguments of train_step that a config decides."""
  return dict(objective=objective, tx=tx, schedule=schedule,
              grad_accum_steps=config.grad_accum_steps,
              compute_dtype=None if config.dtype == "float32" else jnp.dtype(config.dtype),
              normalize=None if config.tasks else images.Normalize.of(config.data))


def jit_train_step(plan: sharding.Plan, state_shardings: Any, sample: Any = None,
                   steps_per_call: int = 1, unroll: bool | None = None,
                   **step_kwargs: Any) -> Any:
  """train_step jitted over the plan's mesh, the state donated (updated in place).

  sample (data.on_device): (state.step, data on the devices) -> the global batch; the jitted
  step then takes (state, data) and draws its batch itself.

  steps_per_call K > 1: one call makes K updates, one after the other (the same updates as K
  calls), and returns every metric stacked (K,). Without sample it takes the K batches stacked
  (K x B x ...); with sample, the same data as one step (each update draws its own batch). On
  CPU the K steps are unrolled: XLA:CPU runs a step inside a while loop ~4x slower than the
  same step at top level (benchmarks/RESULTS.md); elsewhere they are a lax.scan loop (unroll:
  True or False overrides the choice).
  """
  micro_sharding = jax.sharding.NamedSharding(  # k x B/k x ...: B/k over the batch axes
      plan.mesh, jax.sharding.PartitionSpec(None, plan.batch_axes))
  step = functools.partial(train_step, micro_sharding=micro_sharding, **step_kwargs)
  if sample is None:
    one, data_sharding = step, plan.batch_sharding
  else:
    def one(state: TrainState, data: Any) -> tuple[TrainState, dict[str, jax.Array]]:
      batch = jax.lax.with_sharding_constraint(sample(state.step, data), plan.batch_sharding)
      return step(state, batch)
    data_sharding = jax.sharding.NamedSharding(plan.mesh, jax.sharding.PartitionSpec())
  if steps_per_call == 1:
    return jax.jit(one, in_shardings=(state_shardings, data_sharding),
                   out_shardings=(state_shardings, None), donate_argnums=0)

  if unroll is None:
    unroll = plan.mesh.devices.flat[0].platform == "cpu"
  unroll_by = steps_per_call if unroll else 1

  def several(state: TrainState, data: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    if sample is None:  # data: K stacked batches, one per update
      return jax.lax.scan(one, state, data, unroll=unroll_by)
    return jax.lax.scan(lambda s, _: one(s, data), state, length=steps_per_call, unroll=unroll_by)

  if sample is None:  # K x B x ...: the batch axis over the mesh's batch axes, as one batch's
    data_sharding = micro_sharding
  return jax.jit(several, in_shardings=(state_shardings, data_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)
