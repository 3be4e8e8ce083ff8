"""Pure train and eval steps. Everything static (model, optimizer, schedule) is bound with
functools.partial before jit; no config object reaches a traced function."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from bigmodel_jax import sharding
from bigmodel_jax.state import TrainState

# "inputs" B x ... (seq2seq: {"encoder", "decoder"}), "label" B (classes) or B x L (next tokens,
# answer bytes), int32; seq2seq also "weights" B x L (0 on padding); eval also "mask" B.
Batch = dict[str, Any]


def _forward(model: nn.Module, state: TrainState, params: Any, inputs: jax.Array, *,
             train: bool, rng: jax.Array | None = None, model_state: Any = None,
             compute_dtype: Any = None) -> tuple[jax.Array, Any]:
  """Logits (float32) and the updated model_state (unchanged unless training).

  compute_dtype (mixed precision): parameters and floating inputs are cast to it for the forward
  pass; the float32 parameters, their gradients, the optimizer and the loss stay float32.
  """
  model_state = state.model_state if model_state is None else model_state
  if compute_dtype is not None:
    params, inputs = (jax.tree.map(lambda x: x.astype(compute_dtype)
                                   if jnp.issubdtype(x.dtype, jnp.floating) else x, t)
                      for t in (params, inputs))
  variables = {"params": params, **model_state}
  rngs = {"dropout": rng} if rng is not None else {}
  if train and model_state:
    logits, new_model_state = model.apply(variables, inputs, train=True, rngs=rngs,
                                          mutable=list(model_state))
  else:
    logits, new_model_state = model.apply(variables, inputs, train=train, rngs=rngs), model_state
  return logits.astype(jnp.float32), new_model_state


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               grad_accum_steps: int = 1, compute_dtype: Any = None,
               micro_sharding: Any = None, axis_name: str | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on the batch.

  The loss is sum(loss * weight) / sum(weight) over the whole batch, so that
  grad_accum_steps > 1 (the batch split into that many micro-batches, gradients summed in a scan)
  is the same update as one large batch; a model's mutable state (BatchNorm averages) is updated
  once per micro-batch. micro_sharding keeps each micro-batch spread over all data-parallel
  devices. axis_name: under pmap, the named axis that sums are taken over (lax.psum), so the
  update equals jit's over the global batch.
  """
  rng = jax.random.fold_in(state.rng, state.step)
  psum = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
  weights = batch.get("weights")  # seq2seq: 0 on padded target positions
  label_weights = jnp.ones(batch["label"].shape, jnp.float32) if weights is None else weights
  total_weight = jnp.maximum(psum(jnp.sum(label_weights)), 1)

  def loss_fn(params, model_state, micro, micro_rng):
    logits, model_state = _forward(model, state, params, micro["inputs"], train=True,
                                   rng=micro_rng, model_state=model_state,
                                   compute_dtype=compute_dtype)
    w = micro["weights"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, micro["label"])
    sums = {k: jnp.sum(v * w) for k, v in _hits(logits, micro["label"]).items()}
    return jnp.sum(losses * w) / total_weight, (sums, model_state)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  data = {"inputs": batch["inputs"], "label": batch["label"], "weights": label_weights}
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


def _hits(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """0/1 per label: "accuracy", and "top5_accuracy" when there are more than 5 classes. A label
  whose logits are not all finite is never a hit (no logit is greater than a NaN: the label
  would otherwise count as in the top 5)."""
  finite = jnp.all(jnp.isfinite(logits), -1)
  hits = {"accuracy": (jnp.argmax(logits, -1) == labels) & finite}
  if logits.shape[-1] > 5:  # the label's logit is among the 5 largest (no top_k: a sort on CPU)
    label_logit = jnp.take_along_axis(logits, labels[..., None], -1)
    hits["top5_accuracy"] = (jnp.sum(logits > label_logit, -1) < 5) & finite
  return {k: v.astype(jnp.float32) for k, v in hits.items()}


def _per_example(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """B x ... -> B: the (weighted) mean over each example's labels (1 for a classifier, L for an LM)."""
  x = x.reshape(x.shape[0], -1)
  if weights is None:
    return x.mean(axis=1)
  w = weights.reshape(x.shape)
  return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)


def greedy_decode(model: nn.Module, variables: Any, inputs: dict[str, jax.Array]) -> jax.Array:
  """Seq2seq: B x T tokens, each the argmax given the encoder input and the tokens before it
  (the decoder's first input, BOS, is taken from inputs["decoder"][:, 0])."""
  decoder_BxT = jnp.zeros_like(inputs["decoder"]).at[:, 0].set(inputs["decoder"][:, 0])
  predicted = []
  for t in range(decoder_BxT.shape[1]):  # T is small; the decoder is causal
    logits = model.apply(variables, {"encoder": inputs["encoder"], "decoder": decoder_BxT})
    predicted.append(jnp.argmax(logits[:, t], -1).astype(decoder_BxT.dtype))
    if t + 1 < decoder_BxT.shape[1]:
      decoder_BxT = decoder_BxT.at[:, t + 1].set(predicted[-1])
  return jnp.stack(predicted, axis=1)


def eval_step(state: TrainState, batch: Batch, *, model: nn.Module,
              exact_match: bool = False, compute_dtype: Any = None) -> dict[str, jax.Array]:
  """Sums over the real (mask 1) examples; the caller divides by "count" at the end.

  exact_match (seq2seq): also the share of examples whose greedy decoding equals the label at
  every weighted position (the answer and its EOS)."""
  logits, _ = _forward(model, state, state.params, batch["inputs"], train=False,
                       compute_dtype=compute_dtype)
  mask_B, weights = batch["mask"], batch.get("weights")
  losses = {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
            **_hits(logits, batch["label"])}
  sums = {k: jnp.sum(_per_example(v, weights) * mask_B) for k, v in losses.items()}
  if exact_match:
    predicted = greedy_decode(model, {"params": state.params, **state.model_state}, batch["inputs"])
    right_B = jnp.all((predicted == batch["label"]) | (weights == 0), axis=1)
    sums["exact_match"] = jnp.sum(right_B * mask_B)
  return {**sums, "count": jnp.sum(mask_B)}


def step_options(config: ml_collections.ConfigDict, model: Any, tx: Any,
                 schedule: Any) -> dict[str, Any]:
  """The static arguments of train_step that a config decides."""
  return dict(model=model, tx=tx, schedule=schedule, grad_accum_steps=config.grad_accum_steps,
              compute_dtype=None if config.dtype == "float32" else jnp.dtype(config.dtype))


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
