"""Decoding a language model token by token: the prompt, then one new token per step, greedy
(temperature 0) or sampled (top-k). A decoder_lm decodes with its key/value cache (the prompt
in one call, then one token per call); without it (use_cache=False, any language model) the
whole sequence is recomputed each step, giving the same tokens (tests/test_sample.py)."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.faults import ConfigError


def _pick(logits_V: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
  if temperature == 0:
    return jnp.argmax(logits_V)
  logits_V = logits_V / temperature
  if top_k:
    kth = jnp.sort(logits_V)[-top_k]
    logits_V = jnp.where(logits_V < kth, -jnp.inf, logits_V)
  return jax.random.categorical(key, logits_V)


def generate(model: nn.Module, params: Any, prompt: list[int], length: int, *,
             temperature: float = 0.0, top_k: int = 0, seed: int = 0,
             use_cache: bool = True) -> list[int]:
  """The prompt followed by `length` new tokens (batch of one)."""
  total = len(prompt) + length
  max_len = getattr(model, "max_len", total)
  if not prompt or total > max_len:
    raise ConfigError(f"prompt ({len(prompt)} tokens) + length ({length}) must be between 1 "
                      f"and the model's max_len {max_len}")
  key = jax.random.PRNGKey(seed)
  pick = lambda logits, t: _pick(logits, jax.random.fold_in(key, t), temperature, top_k)
  tokens = list(prompt)
  if use_cache:
    if not hasattr(model, "max_len"):
      raise ConfigError(f"model {type(model).__name__} has no key/value cache; use --no_cache")
    cache = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, max_len), jnp.int32),
                                              decode=True)["cache"])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)

    @jax.jit
    def step(cache, tokens_1xL, start, t):
      logits, updated = model.apply({"params": params, "cache": cache}, tokens_1xL, decode=True,
                                    start=start, mutable=["cache"])
      return updated["cache"], pick(logits[0, -1], t)

    cache, token = step(cache, jnp.asarray([prompt], jnp.int32), 0, len(prompt))
    for t in range(len(prompt), total):
      tokens.append(int(token))
      if t + 1 < total:
        cache, token = step(cache, jnp.asarray([[tokens[-1]]], jnp.int32), t, t + 1)
    return tokens

  @jax.jit
  def full(buffer_1xT, t):
    return pick(model.apply({"params": params}, buffer_1xT)[0, t - 1], t)

  buffer = np.zeros((1, max_len), np.int32)  # fixed shape: one compilation; causal, so the
  buffer[0, :len(prompt)] = prompt  # zeros after position t do not change its logits
  for t in range(len(prompt), total):
    buffer[0, t] = int(full(jnp.asarray(buffer), t))
    tokens.append(int(buffer[0, t]))
  return tokens
