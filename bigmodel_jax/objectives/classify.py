"""Softmax cross entropy of one model's logits against integer labels: classifiers (a label per
example), language models (the next token at every position; loss, perplexity and bits per byte
of text) and seq2seq (the answer's bytes,
weighted 0 on padding, plus exact match of greedy decoding at eval)."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from bigmodel_jax.models import pipeline
from bigmodel_jax.models.transformer import REMAT_POLICIES
from bigmodel_jax.objectives.base import Batch, Objective, add_aux, apply, apply_with_aux, cast


class Classify(Objective):
  def __init__(self, model: Any, input_shape: tuple[int, ...], num_classes: Any, kind: str):
    super().__init__(model, input_shape, num_classes)
    self.kind = kind

  def weights(self, batch: Batch) -> jax.Array:
    w = batch.get("weights")  # seq2seq: 0 on padded target positions
    return jnp.ones(batch["label"].shape, jnp.float32) if w is None else w

  def loss(self, params, model_state, batch, rng, compute_dtype=None):
    rngs = {"dropout": rng} if rng is not None else {}
    logits, model_state, aux = apply_with_aux(self.model, params, model_state, batch["inputs"],
                                              compute_dtype=compute_dtype, train=True, rngs=rngs)
    w = batch["weights"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    sums = {k: jnp.sum(v * w) for k, v in hits(logits, batch["label"]).items()}
    return (*add_aux(jnp.sum(losses * w), sums, aux, jnp.sum(w)), model_state)

  def loss_and_grads(self, params, model_state, batch, rng, compute_dtype, total_weight):
    schedule = getattr(getattr(self.model, "layout", None), "pipeline", None)
    if schedule is None or schedule.kind != "1f1b":
      return super().loss_and_grads(params, model_state, batch, rng, compute_dtype, total_weight)
    return self._one_f_one_b(params, model_state, batch, rng, compute_dtype, total_weight)

  def _one_f_one_b(self, params, model_state, batch, rng, compute_dtype, total_weight):
    """A decoder LM's loss and gradients by the 1F1B pipeline schedule (models/pipeline.py):
    the embedding, the stages' layers and the head with this loss, run apart."""
    model, layout, dtype = self.model, self.model.layout, compute_dtype or jnp.float32
    m = layout.pipeline.microbatches
    micro = jax.tree.map(lambda x: layout.stage_constrain(
        x.reshape(m, x.shape[0] // m, *x.shape[1:]), None, 1), batch)

    def embed(p, mb, r):
      x, inputs = apply(model, p, model_state, mb["inputs"], compute_dtype=compute_dtype,
                        part="embed", train=True, rngs={"dropout": r})
      return x.astype(dtype), inputs

    def head(p, x, mb):
      logits = apply(model, p, model_state, mb["inputs"], compute_dtype=compute_dtype,
                     part="head", hidden_BxLxD=x, train=True)
      w = mb["weights"]
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, mb["label"])
      sums = {k: jnp.sum(v * w) for k, v in hits(logits, mb["label"]).items()}
      return jnp.sum(losses * w) / total_weight, sums

    block_layer = pipeline.layer_of(model.stage_block(train=True),
                                    REMAT_POLICIES[model.remat])
    layer = lambda w, x, inputs, r: block_layer(cast(w, compute_dtype), x, inputs, r)  # noqa: E731
    (loss, sums), grads = pipeline.one_f_one_b(layer, embed, head, params, "block", micro, rng,
                                               layout)
    return (loss, (sums, model_state)), grads

  def evaluate(self, variables, batch, rng, compute_dtype=None):
    del rng
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    logits = apply(self.model, params, model_state, batch["inputs"], compute_dtype=compute_dtype,
                   train=False)
    weights = batch.get("weights")
    losses = {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
              **hits(logits, batch["label"])}
    out = {k: _per_example(v, weights) for k, v in losses.items()}
    if "label_bytes" in batch:  # a tokenizer's LM: bits per byte from nats and bytes per example
      w = jnp.ones_like(losses["loss"]) if weights is None else weights
      out["nats"] = jnp.sum(losses["loss"] * w, axis=1)
      out["bytes"] = jnp.sum(batch["label_bytes"] * w, axis=1)
    if self.kind == "seq2seq":  # the share of answers decoded right at every weighted position
      predicted = greedy_decode(self.model, variables, batch["inputs"])
      out["exact_match"] = jnp.all((predicted == batch["label"]) | (weights == 0), axis=1)
    return out

  def finish(self, metrics: dict[str, float]) -> dict[str, float]:
    if self.kind != "lm":
      return metrics
    metrics["eval/perplexity"] = math.exp(min(metrics["eval/loss"], 700.0))  # per token
    if "eval/bytes" in metrics:  # the text's bytes, whatever the tokens: byte and BPE compare
      metrics["eval/bits_per_byte"] = (metrics.pop("eval/nats") / max(metrics.pop("eval/bytes"), 1e-9)
                                       / math.log(2))
    else:  # byte-level: nats per byte -> bits per byte
      metrics["eval/bits_per_byte"] = metrics["eval/loss"] / math.log(2)
    return metrics


def hits(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """0/1 per label: "accuracy", and "top5_accuracy" when there are more than 5 classes. A label
  whose logits are not all finite is never a hit (no logit is greater than a NaN: the label
  would otherwise count as in the top 5)."""
  finite = jnp.all(jnp.isfinite(logits), -1)
  out = {"accuracy": (jnp.argmax(logits, -1) == labels) & finite}
  if logits.shape[-1] > 5:  # the label's logit is among the 5 largest (no top_k: a sort on CPU)
    label_logit = jnp.take_along_axis(logits, labels[..., None], -1)
    out["top5_accuracy"] = (jnp.sum(logits > label_logit, -1) < 5) & finite
  return {k: v.astype(jnp.float32) for k, v in out.items()}


def _per_example(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """B x ... -> B: the (weighted) mean over each example's labels (1 for a classifier, L for an LM)."""
  x = x.reshape(x.shape[0], -1)
  if weights is None:
    return x.mean(axis=1)
  w = weights.reshape(x.shape)
  return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)


def greedy_decode(model: Any, variables: Any, inputs: dict[str, jax.Array]) -> jax.Array:
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
