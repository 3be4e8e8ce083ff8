"""Captioning: a text decoder over an image (models/multimodal.py:Captioner), trained with
teacher forcing (the decoder reads BOS + caption, predicts caption + EOS; padding weighs 0).

Eval: loss and accuracy per token, and eval/exact_match: the greedy caption (decoded with the
key/value cache) equals one of the image's reference captions, word for word up to EOS.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from bigmodel_jax.data.words import BOS, EOS, PAD
from bigmodel_jax.objectives.base import Batch, Objective, apply
from bigmodel_jax.objectives.classify import _per_example


def teacher_forced(text_BxT: jax.Array) -> jax.Array:
  """The decoder's input: BOS, then the caption shifted right by one."""
  return jnp.concatenate([jnp.full_like(text_BxT[:, :1], BOS), text_BxT[:, :-1]], 1)


class Captioning(Objective):
  def weights(self, batch: Batch) -> jax.Array:
    return (batch["inputs"]["text"] != PAD).astype(jnp.float32)

  def _logits(self, params, model_state, batch, compute_dtype, **kwargs):
    text = batch["inputs"]["text"]
    return apply(self.model, params, model_state,
                 {"image": batch["inputs"]["image"], "text": teacher_forced(text)},
                 compute_dtype=compute_dtype, **kwargs)

  def loss(self, params, model_state, batch, rng, compute_dtype=None):
    rngs = {"dropout": rng} if rng is not None else {}
    logits, model_state = self._logits(params, model_state, batch, compute_dtype, train=True,
                                       rngs=rngs, mutable=True)
    text, w = batch["inputs"]["text"], batch["weights"]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, text)
    hits = (jnp.argmax(logits, -1) == text).astype(jnp.float32)
    return jnp.sum(losses * w), {"accuracy": jnp.sum(hits * w)}, model_state

  def evaluate(self, variables, batch, rng, compute_dtype=None):
    del rng
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    logits = self._logits(params, model_state, batch, compute_dtype, train=False)
    text = batch["inputs"]["text"]
    w = self.weights(batch)
    out = {"loss": _per_example(optax.softmax_cross_entropy_with_integer_labels(logits, text), w),
           "accuracy": _per_example((jnp.argmax(logits, -1) == text).astype(jnp.float32), w)}
    if "references" in batch:
      predicted = self.caption(variables, batch["inputs"]["image"], text.shape[1])
      refs_BxKxT = batch["references"]
      out["exact_match"] = jnp.any(jnp.all(predicted[:, None] == refs_BxKxT, -1), -1).astype(
          jnp.float32)
    return out

  def caption(self, variables: Any, image: jax.Array, length: int,
              rng: jax.Array | None = None, temperature: float = 0.0) -> jax.Array:
    """B x length word ids, PAD after the first EOS: greedy (temperature 0) or sampled, one
    token per step with the key/value cache, the image encoded once."""
    model, b = self.model, image.shape[0]
    if length > model.max_len:
      raise ValueError(f"captions of {length} tokens exceed the decoder's max_len {model.max_len}")
    params = {k: v for k, v in variables.items() if k != "cache"}
    memory = model.apply(params, image, method="encode")
    cache = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), {"image": image, "text": jnp.zeros((b, model.max_len), jnp.int32)},
        decode=True)["cache"])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)

    def step(carry, t):
      cache, token_B, done_B = carry
      logits, new = model.apply({**params, "cache": cache}, memory, token_B[:, None],
                                decode=True, start=t, method="decode", mutable=["cache"])
      logits_BxV = logits[:, 0]
      if temperature > 0:
        nxt = jax.random.categorical(jax.random.fold_in(rng, t), logits_BxV / temperature)
      else:
        nxt = jnp.argmax(logits_BxV, -1)
      nxt = jnp.where(done_B, PAD, nxt).astype(jnp.int32)
      return (new["cache"], nxt, done_B | (nxt == EOS)), nxt

    start = (cache, jnp.full((b,), BOS, jnp.int32), jnp.zeros((b,), bool))
    _, tokens_TxB = jax.lax.scan(step, start, jnp.arange(length))
    return tokens_TxB.T
