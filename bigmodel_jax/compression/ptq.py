"""Post-training quantization (in project; inference/quantize.py quantizes a workdir).

Weights: each kernel (2 or more dimensions, path matching `modules`) becomes integers with one
float32 scale per output channel (the last axis; an embedding table's rows), symmetric absmax,
rounded by qwix's own quantize (so a QAT run exports to exactly the weights it trained with):
s = max|w| / (2^(bits-1) - 0.5), q = round(w / s) in [-2^(bits-1), 2^(bits-1) - 1]. int8 is
stored as int8, int4 as two values per byte (uint8). Biases, norm scales and other 1-D
parameters stay float32. For evaluation the integers are multiplied back by their scales (the
float kernels then run: on CPU the int8 gain is in bytes, not in speed).

Activations (act_bits=8): the input of every Dense, DenseGeneral and Conv is rounded to int8 with
one static scale per layer, its absmax over calibration batches of the training split
(simulated: rounded values in float).

Why not qwix's PtqProvider (its rounding is used; QAT and LoRA use its providers): in qwix
0.1.8 it quantizes a convolution's weights only together with its activations
("conv_general_dilated requires same act_qtype and weight_qtype"), and its quantize_params fails
on our Transformer's DenseGeneral attention ("at least one array or dtype is required");
weight-only int8 of every family needs this path.
"""

import functools
import re
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

QUANTIZED = ("qvalue", "scale")  # the keys of a quantized leaf in the saved tree


def _reduced_axes(name: str, ndim: int) -> tuple[int, ...]:
  """The axes one scale spans: a kernel's input axes (all but the last: one scale per output
  channel); an embedding table's row; an attention q/k/v kernel (D x H x Dh) per head and
  channel. The same channels as qwix's QAT, so a QAT model exports to what it trained with."""
  if name.endswith("embedding"):
    return tuple(range(1, ndim))
  if ndim == 3 and name.rpartition("/")[0].endswith(("query", "key", "value")):
    return (0,)
  return tuple(range(ndim - 1))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _qwix_quantize(w: jax.Array, bits: int, channelwise: tuple[int, ...]) -> tuple[jax.Array, ...]:
  import qwix  # (it imports Pallas: only when something is quantized)
  q = qwix.quantize(w, {4: jnp.int4, 8: jnp.int8}[bits], channelwise_axes=channelwise)
  return q.qvalue.astype(jnp.int8), q.scale


def quantize_leaf(w: np.ndarray, bits: int, axes: tuple[int, ...] | None = None
                  ) -> dict[str, np.ndarray]:
  """qwix's rounding (the same XLA program as its QAT, ties included): s = max|w| /
  (2^(bits-1) - 0.5) over `axes` (default: all but the last), q = round(w / s) in
  [-2^(bits-1), 2^(bits-1) - 1]. int4 values are packed two per byte."""
  w = np.asarray(w, np.float32)
  axes = tuple(range(w.ndim - 1)) if axes is None else axes
  q, scale = jax.device_get(_qwix_quantize(jnp.asarray(w), bits,
                                           tuple(a for a in range(w.ndim) if a not in axes)))
  q, scale = np.asarray(q), np.asarray(scale, np.float32)
  if bits == 4:  # two's-complement nibbles, two per byte
    flat = np.concatenate([q.reshape(-1), np.zeros(q.size % 2, np.int8)]).astype(np.uint8) & 0xF
    q = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
  return {"qvalue": q, "scale": scale}


def dequantize_leaf(leaf: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
  q = np.asarray(leaf["qvalue"])
  if q.dtype == np.uint8:  # int4: unpack and sign-extend
    nibbles = np.stack([q & 0xF, q >> 4], axis=1).reshape(-1)[:int(np.prod(shape))]
    q = np.where(nibbles >= 8, nibbles.astype(np.int16) - 16, nibbles).astype(np.int8)
  return q.reshape(shape).astype(np.float32) * np.asarray(leaf["scale"], np.float32)


def quantize_params(params: Any, bits: int, modules: str = ".*") -> Any:
  """The parameter tree with every matching kernel replaced by {"qvalue", "scale"}."""
  pattern = re.compile(modules)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(jax.device_get(params)), sep="/")
  out = {}
  for name, w in flat.items():
    if np.ndim(w) >= 2 and pattern.search(name):
      for k, v in quantize_leaf(w, bits, _reduced_axes(name, np.ndim(w))).items():
        out[f"{name}/{k}"] = v
    else:
      out[name] = np.asarray(w)
  return flax.traverse_util.unflatten_dict(out, sep="/")


def dequantize_params(qparams: Any, abstract: Any) -> Any:
  """Float parameters shaped like `abstract` from a quantize_params tree."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract), sep="/")
  saved = flax.traverse_util.flatten_dict(flax.core.unfreeze(qparams), sep="/")
  out = {}
  for name, x in flat.items():
    if f"{name}/qvalue" in saved:
      leaf = {k: saved[f"{name}/{k}"] for k in QUANTIZED}
      out[name] = dequantize_leaf(leaf, tuple(x.shape)).astype(x.dtype)
    else:
      out[name] = np.asarray(saved[name])
  return flax.traverse_util.unflatten_dict(out, sep="/")


def nbytes(tree: Any) -> int:
  return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


# --- Activations: static int8 scales per layer ---------------------------------------------------

_LAYERS = (nn.Dense, nn.DenseGeneral, nn.Conv)


def _layer_input(context: Any) -> bool:
  return context.method_name == "__call__" and isinstance(context.module, _LAYERS)


def calibrate(apply_fn: Any, *args: Any) -> dict[str, float]:
  """Per layer path, the largest |input| while apply_fn(*args) runs (jitted once)."""
  def run(*args):
    seen: dict[str, jax.Array] = {}

    def record(next_fun, args, kwargs, context):
      if _layer_input(context):
        path = "/".join(context.module.path)
        m = jnp.max(jnp.abs(args[0]))
        seen[path] = jnp.maximum(seen[path], m) if path in seen else m
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
      apply_fn(*args)
    return seen

  return {k: float(v) for k, v in jax.device_get(jax.jit(run)(*args)).items()}


def act_quantizer(scales: dict[str, float], bits: int = 8):
  """A flax method interceptor: every calibrated layer's input rounded to `bits` with its scale
  (use: `with nn.intercept_methods(act_quantizer(scales)): ...` around the tracing)."""
  qmax = 2 ** (bits - 1) - 1

  def fake_quant(next_fun, args, kwargs, context):
    if _layer_input(context):
      absmax = scales.get("/".join(context.module.path))
      if absmax:
        s = absmax / (qmax + 0.5)
        args = (jnp.clip(jnp.round(args[0] / s), -qmax - 1, qmax) * s, *args[1:])
    return next_fun(*args, **kwargs)

  return fake_quant
