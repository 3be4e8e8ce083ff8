"""Quantization-aware training and LoRA through qwix: the model's class is wrapped so that its
dot_general / conv calls go through a qwix provider.

QAT (qwix.QtProvider): the forward pass uses weights rounded to `weight_bits` per output channel
(absmax scales), optionally activations to `act_bits` (dynamic per-example scales); gradients
pass straight through. The parameter tree is unchanged, so a QAT workdir resumes, warm-starts
and quantizes (bigmodel_jax.quantize) like any other.

LoRA (qwix.LoraProvider): each matching kernel K gains K_lora_a (in x rank) and K_lora_b
(rank x out, zeros at init: training starts at the base model); the layer computes
x K + (alpha / rank) (x a) b. Sharding: the adapters inherit the kernel's logical axis names.
"""

from typing import Any

import flax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigmodel_jax.faults import ConfigError

LORA_SUFFIXES = ("_lora_a", "_lora_b")
_QTYPES = {4: jnp.int4, 8: jnp.int8}


def _search(regex: str) -> str:
  """qwix matches a rule's module_path with re.fullmatch; ours are searched, like config.freeze."""
  return f".*(?:{regex}).*"


def wrap(config: ml_collections.ConfigDict, model: Any) -> Any:
  """The model under QAT or LoRA when the config asks for either, else the model itself (qwix,
  which imports Pallas, is imported only then)."""
  q, lora = config.quantization, config.lora
  if not (q.weight_bits or lora.rank):
    return model
  import qwix
  if q.weight_bits:
    rule = qwix.QtRule(module_path=_search(q.modules), weight_qtype=_QTYPES[q.weight_bits],
                       act_qtype=_QTYPES[q.act_bits] if q.act_bits else None)
    return qwix.quantize_model(model, qwix.QtProvider([rule]))
  provider = qwix.LoraProvider(module_path=_search(lora.modules), rank=lora.rank,
                               alpha=float(lora.alpha))
  return qwix.quantize_model(model, provider)


def is_adapter(path: str) -> bool:
  return path.endswith(LORA_SUFFIXES)


# optim.freeze's regex for a LoRA run: every parameter that is not an adapter (a path may end in
# "/.value" while the parameters are boxed with their logical axis names).
FREEZE_BASE = r"^(?!.*_lora_[ab](/|$))"


def check_adapters(params: Any, lora: ml_collections.ConfigDict) -> None:
  """ConfigError when lora.modules matched no layer (no adapter was created), or when lora.rank
  exceeds an adapted kernel's smaller side (a's rows: its contracted axes; b's columns: the
  rest), where the adapters would hold more numbers than the kernel. `params` may be abstract
  (ShapeDtypeStructs): checked before anything is allocated."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  if not any(is_adapter(n) for n in flat):
    layers = ", ".join(sorted({n.rpartition("/")[0] for n in flat}))
    raise ConfigError(f"lora.modules='{lora.modules}' matches no layer of the model; its layers: "
                      f"{layers[:300]}{' ...' if len(layers) > 300 else ''}")
  sides = {name[:-len("_lora_a")]: min(np.prod(a.shape) // lora.rank,
                                       np.prod(flat[name[:-1] + "b"].shape) // lora.rank)
           for name, a in flat.items() if name.endswith("_lora_a")}
  kernel = min(sides, key=sides.get)
  if lora.rank > sides[kernel]:
    raise ConfigError(f"lora.rank={lora.rank} is more than the smaller side of the adapted kernel "
                      f"{kernel} {tuple(flat[kernel].shape)}: at most {sides[kernel]}")


def merge(params: Any, alpha: float, rank: int) -> Any:
  """Plain parameters: each kernel K with adapters becomes K + (alpha / rank) a b (reshaped to
  K's shape: a's rows are K's contracted axes in order, b's columns the rest), adapters dropped."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
  out = {k: v for k, v in flat.items() if not is_adapter(k)}
  for name in [k for k in flat if k.endswith("_lora_a")]:
    base = name[:-len("_lora_a")]
    a, b = flat[name], flat[base + "_lora_b"]
    kernel = out[base]
    delta = np.asarray(a, np.float32).reshape(-1, rank) @ np.asarray(b, np.float32)
    out[base] = (np.asarray(kernel, np.float32) + alpha / rank * delta.reshape(kernel.shape)
                 ).astype(kernel.dtype)
  return flax.traverse_util.unflatten_dict(out, sep="/")
