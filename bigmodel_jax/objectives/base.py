"""The seam between the trainer and what is learned.

An objective owns the networks (one flax module, whose top-level parameter groups are the
networks), the loss of a batch, the eval metrics and, for generative models, sampling. The
trainer (train.py, steps.py) owns everything else: meshes, jit/pmap, accumulation, precision,
the NaN guard, checkpoints, metrics. Objectives know nothing of meshes or checkpoints.

Contract (jax-traceable, no config objects):
  loss(params, model_state, batch, rng, compute_dtype) -> (sum of per-row loss x batch["weights"],
      {metric: sum of per-row value x weights}, new model_state); the trainer divides by the
      total weight, so gradient accumulation and pmap give the same update as one large batch.
  loss_and_grads(...): the trainer's entry, autodiff of loss by default.
  evaluate(variables, batch, rng, compute_dtype) -> {metric: B per-example values}; the trainer
      sums them over the real (mask 1) examples and divides by their count. Values named
      "collect/NAME" (B x ...) are gathered over the split instead and handed to
      finish_collected (retrieval metrics).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import AUX

Batch = dict[str, Any]


def cast(tree: Any, dtype: Any) -> Any:
  """Floating leaves to `dtype` (mixed precision); None leaves the tree as it is."""
  if dtype is None:
    return tree
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      tree)


def _apply(model: nn.Module, params: Any, model_state: Any, args: tuple, compute_dtype: Any,
           collections: list[str], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
  """model.apply with the parameters and floating inputs in compute_dtype, floating outputs back
  in float32; (outputs, the updated `collections`: none when it is empty)."""
  params, args = cast(params, compute_dtype), cast(args, compute_dtype)
  variables = {"params": params, **model_state}
  if collections:
    out, new = model.apply(variables, *args, mutable=collections, **kwargs)
  else:
    out, new = model.apply(variables, *args, **kwargs), {}
  out = jax.tree.map(lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating)
                     else x, out)
  return out, dict(new)


def apply(model: nn.Module, params: Any, model_state: Any, *args: Any, compute_dtype: Any = None,
          method: str | None = None, mutable: bool = False, **kwargs: Any) -> Any:
  """model.apply with the parameters and floating inputs in compute_dtype; floating outputs back
  in float32. mutable: also return the updated model_state (BatchNorm statistics)."""
  collections = list(model_state) if mutable else []
  out, new_state = _apply(model, params, model_state, args, compute_dtype, collections,
                          {"method": method, **kwargs})
  return (out, new_state if collections else model_state) if mutable else out


def apply_with_aux(model: nn.Module, params: Any, model_state: Any, *args: Any,
                   compute_dtype: Any = None, **kwargs: Any) -> tuple[Any, Any, dict[str, jax.Array]]:
  """apply(..., mutable=True) in training, plus what the model sowed into the AUX collection
  (MoE routers): {name: the mean over the layers that sowed it}, float32 scalars; "aux_loss" is
  the loss term the model asks for, the rest are metrics."""
  out, new_state = _apply(model, params, model_state, args, compute_dtype, [*model_state, AUX],
                          kwargs)
  sown = new_state.pop(AUX, {})
  values: dict[str, list[jax.Array]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(sown)[0]:
    name = next(p.key for p in reversed(path) if isinstance(p, jax.tree_util.DictKey))
    values.setdefault(name, []).append(jnp.ravel(leaf).astype(jnp.float32))
  return out, new_state, {k: jnp.mean(jnp.concatenate(v)) for k, v in values.items()}


def add_aux(loss_sum: jax.Array, sums: dict[str, jax.Array], aux: dict[str, jax.Array],
            total_weight: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """A batch's loss sum and metric sums with the model's sown terms added (each a mean per
  label, so weighted by the batch's total weight like the per-label terms)."""
  aux = dict(aux)
  for name in [k for k in aux if k.endswith("aux_loss")]:  # MoE's aux_loss, MTP's mtp_aux_loss
    loss_sum = loss_sum + aux.pop(name) * total_weight
  return loss_sum, {**sums, **{k: v * total_weight for k, v in aux.items()}}


class Objective:
  """One network, one optimizer (config.optimizer); subclasses override what they need."""

  # top-level parameter groups, each with its own optimizer (set from config_rules.OBJECTIVES)
  networks: tuple[str, ...] = ()
  can_sample = False  # generates inputs: sample() exists, samples are scored at every eval
  # extra_state collections whose values are given (a distillation teacher's variables): the
  # trainer places them over their initial values when a run starts
  preset_state: dict[str, Any] = {}

  def __init__(self, model: nn.Module, input_shape: tuple[int, ...], num_classes: int):
    self.model, self.input_shape, self.num_classes = model, tuple(input_shape), num_classes
    self.conditional = bool(getattr(model, "conditional", False))

  def weights(self, batch: Batch) -> jax.Array:
    """The weight of each row (or label) of a training batch."""
    return batch.get("weights", jnp.ones(batch["label"].shape[:1], jnp.float32))

  def labels(self, batch: Batch) -> jax.Array:
    return batch["label"] if self.conditional else jnp.zeros_like(batch["label"])

  def loss(self, params: Any, model_state: Any, batch: Batch, rng: jax.Array,
           compute_dtype: Any = None) -> tuple[jax.Array, dict[str, jax.Array], Any]:
    raise NotImplementedError

  def loss_and_grads(self, params: Any, model_state: Any, batch: Batch, rng: jax.Array,
                     compute_dtype: Any, total_weight: jax.Array) -> tuple[Any, Any]:
    """((loss sum / total_weight, (metric sums, new model_state)), gradients) of a batch: by
    autodiff of loss(); an objective whose model's pipeline schedule owns the backward pass
    (1F1B, models/pipeline.py) computes them itself."""
    def loss_fn(params, model_state, batch, rng):
      loss_sum, sums, model_state = self.loss(params, model_state, batch, rng, compute_dtype)
      return loss_sum / total_weight, (sums, model_state)
    return jax.value_and_grad(loss_fn, has_aux=True)(params, model_state, batch, rng)

  def evaluate(self, variables: Any, batch: Batch, rng: jax.Array,
               compute_dtype: Any = None) -> dict[str, jax.Array]:
    raise NotImplementedError

  def extra_state(self, example_inputs: Any) -> dict[str, Any]:
    """Model-state collections the objective reads but never trains (a distillation teacher's
    variables), created at init: sharded by their logical axis names, checkpointed."""
    return {}

  def finish(self, metrics: dict[str, float]) -> dict[str, float]:
    """Eval metrics derived from the averaged ones (e.g. bits per byte)."""
    return metrics

  def finish_collected(self, rows: dict[str, Any]) -> dict[str, float]:
    """Eval metrics of the whole split from the "collect/..." values evaluate() returned, one
    row per real example in order (retrieval needs every pair at once)."""
    raise NotImplementedError

  def sample(self, variables: Any, rng: jax.Array, labels_N: jax.Array) -> jax.Array:
    """N new inputs (scaled like the data), of class labels_N when conditional."""
    raise NotImplementedError
