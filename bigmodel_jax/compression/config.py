"""The compression sections of the default config and their checks (no JAX: main.py checks a
config before JAX is imported)."""

import re
from typing import Any

import ml_collections

from bigmodel_jax.config_rules import is_finite, is_int
from bigmodel_jax.faults import ConfigError

BITS = (4, 8)  # weight bits qwix (QAT) and ptq.py (PTQ) both serve


def add_defaults(c: ml_collections.ConfigDict) -> None:
  # Quantization-aware training (compression/qwix_wrap.py, qwix's QtProvider): the forward pass
  # sees weights (and optionally activations) rounded to these bits; 0 = off. `modules`: a regex
  # searched in module paths ("block0/attention/query"); only matching layers are quantized.
  c.quantization = ml_collections.ConfigDict({"weight_bits": 0, "act_bits": 0, "modules": ".*"})
  # Magnitude pruning (compression/prune.py): sparsity 0 = off; the fraction of each prunable
  # kernel (scope=layer) or of all of them together (scope=global) zeroed, reached along a cubic
  # schedule from start_step to end_step (0: 3/4 of the run), masks updated every `every` steps.
  # n_m="2:4": N of every M consecutive input weights kept instead (sparsity N/M, from
  # start_step). 1-D parameters (biases, norm scales) and paths matching `dense` stay dense.
  c.pruning = ml_collections.ConfigDict({
      "sparsity": 0.0, "scope": "layer", "start_step": 0, "end_step": 0, "every": 50, "n_m": "",
      "dense": "stem|embed|conv_init"})
  # Distillation (objectives/distill.py): teacher = a trained workdir of the same data (its
  # number of classes); loss = (1 - alpha) cross entropy + alpha T^2 KL(teacher_T || student_T).
  c.distill = ml_collections.ConfigDict({"teacher": "", "temperature": 2.0, "alpha": 0.5})
  # LoRA (compression/qwix_wrap.py, qwix's LoraProvider): rank 0 = off; adapters of this rank on
  # the layers whose module path matches `modules` (searched), scaled by alpha / rank; every
  # other parameter is frozen. `python -m bigmodel_jax.quantize` merges them for export.
  c.lora = ml_collections.ConfigDict({"rank": 0, "alpha": 16.0, "modules": "attention"})


def _regex(key: str, value: str) -> None:
  try:
    re.compile(value)
  except re.error as e:
    raise ConfigError(f"{key}='{value}' is not a regex: {e}") from None


def n_m(text: str) -> tuple[int, int] | None:
  """'2:4' -> (2, 4); '' -> None."""
  if not text:
    return None
  m = re.fullmatch(r"(\d+):(\d+)", text)
  if not m or not 0 < int(m[1]) < int(m[2]):
    raise ConfigError(f"pruning.n_m must be 'N:M' with 0 < N < M (e.g. 2:4), got '{text}'")
  return int(m[1]), int(m[2])


def _number(ok) -> Any:  # finite in float32 (config_rules.is_finite), and ok
  return lambda v: is_finite(v) and ok(v)


def _integer(ok) -> Any:
  return lambda v: is_int(v) and ok(v)


# What each numeric key must be (the same contract as config_rules.NUMERIC_RULES), checked
# whether or not its section is on.
NUMERIC_RULES = {
    "quantization.weight_bits": (lambda v: v in (0, *BITS) and not isinstance(v, bool),
                                 "0 (off), 4 or 8"),
    "quantization.act_bits": (lambda v: v in (0, 8) and not isinstance(v, bool), "0 (off) or 8"),
    "pruning.sparsity": (_number(lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "pruning.start_step": (_integer(lambda v: v >= 0), "an integer >= 0"),
    "pruning.end_step": (_integer(lambda v: v >= 0), "an integer >= 0 (0: 3/4 of the run)"),
    "pruning.every": (_integer(lambda v: v > 0), "a positive integer"),
    "distill.temperature": (_number(lambda v: v > 0), "a finite number > 0"),
    "distill.alpha": (_number(lambda v: 0 <= v <= 1), "a number in [0, 1]"),
    "lora.rank": (_integer(lambda v: v >= 0), "an integer >= 0 (0: off)"),
    "lora.alpha": (_number(lambda v: v > 0), "a finite number > 0"),
}


def check(config: ml_collections.ConfigDict) -> None:
  """Ranges of the compression keys and how they combine with each other and the run."""
  for key, (ok, what) in NUMERIC_RULES.items():
    section, leaf = key.split(".")
    if not ok(config[section][leaf]):
      raise ConfigError(f"{key} must be {what}, got {config[section][leaf]!r}")
  q, p, lora = config.quantization, config.pruning, config.lora
  if q.act_bits and not q.weight_bits:
    raise ConfigError("quantization.act_bits needs quantization.weight_bits (4 or 8)")
  _regex("quantization.modules", q.modules)
  if p.scope not in ("layer", "global"):
    raise ConfigError(f"pruning.scope must be layer or global, got '{p.scope}'")
  if p.end_step and p.end_step <= p.start_step:
    raise ConfigError(f"pruning.end_step={p.end_step} must be after start_step={p.start_step}")
  if n_m(p.n_m) and p.sparsity:
    raise ConfigError(f"pruning.n_m={p.n_m} sets the sparsity itself; leave pruning.sparsity=0")
  _regex("pruning.dense", p.dense)
  if lora.rank:
    _regex("lora.modules", lora.modules)
    if q.weight_bits:
      raise ConfigError("lora.rank and quantization.weight_bits together (QLoRA) are not built: "
                        "train the adapters, then quantize the merged model (bigmodel_jax.quantize)")
    if config.freeze:
      raise ConfigError("lora.rank freezes every parameter but the adapters; leave freeze empty")
  if (p.sparsity or p.n_m) and lora.rank:
    raise ConfigError("pruning and lora together are not built (the adapters would undo the "
                      "zeros of the merged kernels)")
