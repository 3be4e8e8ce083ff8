"""Magnitude pruning as an optax wrapper, after jaxpruner (Lee et al. 2023) and the gradual
schedule of Zhu & Gupta (2017), "To prune, or not to prune".

The wrapped optimizer's update is applied, then the parameters are multiplied by their masks, so
a pruned weight is exactly 0 after every step. Every `every` steps from start_step to end_step
the masks are recomputed from the magnitudes of the updated weights, at the sparsity of the
cubic schedule s(t) = s_f (1 - (1 - (t - t0) / (t1 - t0))^3): the smallest of each kernel
(scope=layer) or of all kernels together (scope=global) are zeroed. N:M keeps the N largest of
every M consecutive weights along a kernel's input axis (the second to last) instead.

The masks live in the optimizer state: checkpoints carry them and a resumed run is exact. They
take the kernels' logical axis names, so they are sharded like the kernels. Prunable: kernels
with 2 or more dimensions whose path does not match pruning.dense (stems, embeddings); biases,
norm scales and every 1-D parameter stay dense.
"""

import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigmodel_jax.compression.config import n_m


class PruneState(NamedTuple):
  inner: Any  # the wrapped optimizer's state
  masks: tuple  # one bool array per prunable parameter, in tree order
  count: jax.Array  # int32: updates so far


def _boxed(x: Any) -> bool:
  return isinstance(x, nn.LogicallyPartitioned)


def _leaves(params: Any) -> list[tuple[str, Any]]:
  """(path "conv_0/kernel", leaf) in tree order; a boxed leaf stays boxed."""
  flat, _ = jax.tree_util.tree_flatten_with_path(params, is_leaf=_boxed)
  return [("/".join(str(k.key) for k in path if hasattr(k, "key")), leaf) for path, leaf in flat]


def prunable(params: Any, dense: str) -> list[bool]:
  """Per leaf in tree order: is it pruned?"""
  pattern = re.compile(dense) if dense else None
  shape = lambda x: (x.value if _boxed(x) else x).shape  # noqa: E731
  return [len(shape(x)) >= 2 and not (pattern and pattern.search(name))
          for name, x in _leaves(params)]


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> tuple[int, int]:
  """(start, end) steps of the sparsity ramp; end 0 means 3/4 of the run."""
  end = cfg.end_step or max(cfg.start_step + 1, (3 * total_steps) // 4)
  return cfg.start_step, end


def target_sparsity(count: jax.Array, final: float, start: int, end: int) -> jax.Array:
  frac = jnp.clip((count - start) / max(end - start, 1), 0.0, 1.0)
  return final * (1.0 - (1.0 - frac) ** 3)


def _keep_largest(magnitude: jax.Array, drop: jax.Array) -> jax.Array:
  """True for all but the `drop` smallest entries (ties broken by position: deterministic)."""
  flat = magnitude.reshape(-1)
  rank = jnp.argsort(jnp.argsort(flat, stable=True), stable=True)
  return (rank >= drop).reshape(magnitude.shape)


def _n_m_mask(w: jax.Array, n: int, m: int) -> jax.Array:
  if w.shape[-2] % m:
    return jnp.ones(w.shape, bool)  # inputs not a multiple of M: left dense
  g = jnp.abs(w).reshape(*w.shape[:-2], w.shape[-2] // m, m, w.shape[-1])
  rank = jnp.argsort(jnp.argsort(-g, axis=-2, stable=True), axis=-2, stable=True)
  return (rank < n).reshape(w.shape)


def masks_for(weights: list[jax.Array], sparsity: jax.Array, scope: str,
              pattern: tuple[int, int] | None) -> list[jax.Array]:
  if pattern:
    return [_n_m_mask(w, *pattern) for w in weights]
  if scope == "layer":
    return [_keep_largest(jnp.abs(w), jnp.floor(sparsity * w.size).astype(jnp.int32))
            for w in weights]
  flat = jnp.concatenate([jnp.abs(w).reshape(-1).astype(jnp.float32) for w in weights])
  keep = _keep_largest(flat, jnp.floor(sparsity * flat.size).astype(jnp.int32))
  bounds = np.cumsum([0] + [w.size for w in weights])
  return [keep[a:b].reshape(w.shape) for a, b, w in zip(bounds[:-1], bounds[1:], weights)]


def wrap(tx: optax.GradientTransformation, cfg: ml_collections.ConfigDict,
         total_steps: int) -> optax.GradientTransformation:
  """tx with pruning.* applied (tx itself when pruning is off)."""
  pattern = n_m(cfg.n_m)
  if not cfg.sparsity and not pattern:
    return tx
  start, end = schedule(cfg, total_steps)
  final = 1.0 - pattern[0] / pattern[1] if pattern else cfg.sparsity

  def init(params):
    masks = tuple(jax.tree.map(lambda x: jnp.ones(x.shape, bool), leaf)
                  for (_, leaf), p in zip(_leaves(params), prunable(params, cfg.dense)) if p)
    return PruneState(tx.init(params), masks, jnp.zeros((), jnp.int32))

  def update(updates, state, params):
    updates, inner = tx.update(updates, state.inner, params)
    which = prunable(params, cfg.dense)
    kernels = [p + u for (_, p), (_, u), is_pruned in zip(_leaves(params), _leaves(updates), which)
               if is_pruned]  # the weights after this update: their magnitudes choose the masks
    due = (state.count >= start) & ((state.count - start) % cfg.every == 0)
    due = due & (state.count <= end) if not pattern else due
    sparsity = target_sparsity(state.count, final, start, end)
    masks = jax.lax.cond(due, lambda: tuple(masks_for(kernels, sparsity, cfg.scope, pattern)),
                         lambda: state.masks)
    it = iter(masks)  # a kept weight moves by its update, a pruned one to exactly 0
    out = [jnp.where(next(it), u, -p) if is_pruned else u
           for (_, p), (_, u), is_pruned in zip(_leaves(params), _leaves(updates), which)]
    treedef = jax.tree.structure(updates)
    return jax.tree.unflatten(treedef, out), PruneState(inner, masks, state.count + 1)

  return optax.GradientTransformation(init, update)


def sparsity(params: Any, dense: str) -> float:
  """The share of exact zeros among the prunable parameters (measured, not the schedule's)."""
  leaves = [x for (_, x), p in zip(_leaves(params), prunable(params, dense)) if p]
  total = sum(x.size for x in leaves)
  zeros = sum(int(jax.device_get(jnp.sum(x == 0))) for x in leaves)
  return zeros / max(total, 1)
