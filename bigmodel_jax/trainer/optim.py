"""The Optax optimizer and learning-rate schedule from config.optimizer and config.schedule."""

import re
from typing import Any

import jax
import ml_collections
import optax

from bigmodel_jax.compression import prune, qwix_wrap
from bigmodel_jax.faults import ConfigError


def decay_mask(params: Any) -> Any:
  """True for kernels and embeddings; False for biases and normalization scales (1-D leaves)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_schedule(cfg: ml_collections.ConfigDict, peak: float, total_steps: int) -> optax.Schedule:
  """Learning rate per step: an optional linear warmup from 0, then the named shape."""
  warmup = cfg.warmup_steps
  if warmup < 0 or warmup >= total_steps and cfg.name != "constant":
    raise ConfigError(f"schedule.warmup_steps={warmup} must be in [0, total_steps={total_steps})")
  steps = max(total_steps - warmup, 1)  # steps the main shape covers
  end = peak * cfg.end_factor
  if cfg.name == "constant":
    main = optax.constant_schedule(peak)
  elif cfg.name == "linear":
    main = optax.linear_schedule(peak, end, steps)
  elif cfg.name in ("cosine", "warmup_cosine"):
    main = optax.cosine_decay_schedule(peak, steps, alpha=cfg.end_factor)
  elif cfg.name == "step":
    main = optax.piecewise_constant_schedule(
        peak, {int(b * total_steps) - warmup: cfg.decay_factor for b in cfg.boundaries})
  elif cfg.name == "rsqrt":
    # peak until the warmup ends, then peak * sqrt(warmup / step): the Transformer schedule.
    timescale = max(warmup, 1)
    main = lambda count: peak * jax.lax.rsqrt((count + timescale) / timescale)
  else:
    raise ConfigError(f"unknown schedule '{cfg.name}'; known: constant, linear, cosine, step, "
                      "warmup_cosine, rsqrt")
  if cfg.name == "warmup_cosine" and warmup == 0:
    raise ConfigError("schedule warmup_cosine needs schedule.warmup_steps > 0")
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def make_optimizer(cfg: ml_collections.ConfigDict, schedule: optax.Schedule
                   ) -> optax.GradientTransformation:
  """Clipping, then the named optimizer; weight decay skips biases and norm scales."""
  wd = cfg.weight_decay
  if cfg.name == "sgd":
    opt = optax.sgd(schedule)
  elif cfg.name == "momentum":
    opt = optax.sgd(schedule, momentum=cfg.momentum)
  elif cfg.name == "nesterov":
    opt = optax.sgd(schedule, momentum=cfg.momentum, nesterov=True)
  elif cfg.name == "adam":
    opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=decay_mask)
  elif cfg.name == "lamb":
    opt = optax.lamb(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=decay_mask)
  else:
    raise ConfigError(f"unknown optimizer '{cfg.name}'; known: sgd, momentum, nesterov, adam, "
                      "adamw, lamb")
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if wd and cfg.name in ("sgd", "momentum", "nesterov", "adam"):
    # Coupled L2: the decay enters the gradient, as in the classic SGD + weight decay recipes.
    parts.append(optax.add_decayed_weights(wd, mask=decay_mask))
  return optax.chain(*parts, opt)


def _patterns(freeze: str) -> list[re.Pattern]:
  try:
    return [re.compile(p) for p in freeze.split(",") if p.strip()]
  except re.error as e:
    raise ConfigError(f"freeze: '{freeze}' is not a comma-separated list of regexes: {e}") from e


def _name(path: tuple) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)  # "conv_0/kernel"


def _labels(params: Any, patterns: list[re.Pattern]) -> Any:
  def label(path, _):
    return "frozen" if any(p.search(_name(path)) for p in patterns) else "train"
  return jax.tree_util.tree_map_with_path(label, params)


def freeze(tx: optax.GradientTransformation, freeze: str) -> optax.GradientTransformation:
  """Parameters whose path ("conv_0/kernel") matches one of the comma-separated regexes are
  never updated (their updates are zero; no optimizer state is kept for them)."""
  patterns = _patterns(freeze)
  if not patterns:
    return tx
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                               lambda params: _labels(params, patterns))


def freeze_regex(config: ml_collections.ConfigDict) -> str:
  """What is frozen: config.freeze, or with LoRA every parameter but the adapters."""
  return qwix_wrap.FREEZE_BASE if config.lora.rank else config.freeze


def trainable_count(params: Any, frozen: list[str]) -> int:
  """Parameters (elements) outside the paths frozen_paths returned."""
  frozen = set(frozen)
  return sum(x.size for path, x in jax.tree_util.tree_leaves_with_path(params)
             if _name(path) not in frozen)


def frozen_paths(params: Any, freeze: str) -> list[str]:
  """The paths `freeze` matches; ConfigError if it names something but matches nothing."""
  patterns = _patterns(freeze)
  if not patterns:
    return []
  labels = jax.tree_util.tree_leaves_with_path(_labels(params, patterns))
  frozen = [_name(p) for p, v in labels if v == "frozen"]
  if not frozen:
    names = ", ".join(_name(p) for p, _ in labels)
    raise ConfigError(f"freeze='{freeze}' matches no parameter; parameters: {names}")
  if len(frozen) == len(labels):
    raise ConfigError(f"freeze='{freeze}' freezes every parameter: nothing would train")
  return frozen


def for_networks(config: ml_collections.ConfigDict, networks: tuple[str, ...],
                 total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The experiment's optimizer and its (first) schedule, with config.freeze (or LoRA's) and
  config.pruning applied.

  networks (an objective's parameter groups, e.g. generator and discriminator): the first is
  trained by config.optimizer and config.schedule, each other one by config.optimizers.NAME
  with its own schedule; one optax.multi_transform over the top-level parameter names."""
  schedule = make_schedule(config.schedule, config.optimizer.learning_rate, total_steps)
  tx = make_optimizer(config.optimizer, schedule)
  if networks:
    txs = {networks[0]: tx}
    for name in networks[1:]:
      cfg = config.optimizers[name]
      txs[name] = make_optimizer(cfg, make_schedule(cfg.schedule, cfg.learning_rate, total_steps))
    tx = optax.multi_transform(txs, lambda params: {k: k for k in params})
  return prune.wrap(freeze(tx, freeze_regex(config)), config.pruning, total_steps), schedule
