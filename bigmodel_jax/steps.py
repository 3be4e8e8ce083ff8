"""Pure train and eval steps. Everything static (model, optimizer, schedule) is bound with
functools.partial before jit; no config object reaches a traced function."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bigmodel_jax.state import TrainState

# "inputs" B x ... (seq2seq: {"encoder", "decoder"}), "label" B (classes) or B x L (next tokens,
# answer bytes), int32; seq2seq also "weights" B x L (0 on padding); eval also "mask" B.
Batch = dict[str, Any]


def _forward(model: nn.Module, state: TrainState, params: Any, inputs: jax.Array, *,
             train: bool, rng: jax.Array | None = None) -> tuple[jax.Array, Any]:
  """Logits (float32) and the updated model_state (unchanged unless training)."""
  variables = {"params": params, **state.model_state}
  rngs = {"dropout": rng} if rng is not None else {}
  if train and state.model_state:
    logits, new_model_state = model.apply(variables, inputs, train=True, rngs=rngs,
                                          mutable=list(state.model_state))
  else:
    logits, new_model_state = model.apply(variables, inputs, train=train, rngs=rngs), state.model_state
  return logits.astype(jnp.float32), new_model_state


def train_step(state: TrainState, batch: Batch, *, model: nn.Module,
               tx: optax.GradientTransformation, schedule: optax.Schedule
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  rng = jax.random.fold_in(state.rng, state.step)

  weights = batch.get("weights")  # seq2seq: 0 on padded target positions

  def loss_fn(params):
    logits, model_state = _forward(model, state, params, batch["inputs"], train=True, rng=rng)
    loss = _mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]), weights)
    return loss, (logits, model_state)

  (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state, model_state=model_state)
  metrics = {
      "loss": loss,
      **{k: _mean(v, weights) for k, v in _hits(logits, batch["label"]).items()},
      "learning_rate": jnp.asarray(schedule(state.step), jnp.float32),
      "grad_norm": optax.tree.norm(grads),
  }
  return new_state, metrics


def _hits(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """0/1 per label: "accuracy", and "top5_accuracy" when there are more than 5 classes."""
  hits = {"accuracy": (jnp.argmax(logits, -1) == labels).astype(jnp.float32)}
  if logits.shape[-1] > 5:
    _, top5 = jax.lax.top_k(logits, 5)
    hits["top5_accuracy"] = jnp.any(top5 == labels[..., None], axis=-1).astype(jnp.float32)
  return hits


def _mean(x: jax.Array, weights: jax.Array | None) -> jax.Array:
  return jnp.mean(x) if weights is None else jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1)


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
              exact_match: bool = False) -> dict[str, jax.Array]:
  """Sums over the real (mask 1) examples; the caller divides by "count" at the end.

  exact_match (seq2seq): also the share of examples whose greedy decoding equals the label at
  every weighted position (the answer and its EOS)."""
  logits, _ = _forward(model, state, state.params, batch["inputs"], train=False)
  mask_B, weights = batch["mask"], batch.get("weights")
  losses = {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
            **_hits(logits, batch["label"])}
  sums = {k: jnp.sum(_per_example(v, weights) * mask_B) for k, v in losses.items()}
  if exact_match:
    predicted = greedy_decode(model, {"params": state.params, **state.model_state}, batch["inputs"])
    right_B = jnp.all((predicted == batch["label"]) | (weights == 0), axis=1)
    sums["exact_match"] = jnp.sum(right_B * mask_B)
  return {**sums, "count": jnp.sum(mask_B)}
