"""Dense and convolution layers whose parameters carry logical axis names.

Logical names used so far (sharding.py maps them to mesh axes):
  embed      features going into a dense layer      mlp       hidden units of a dense layer
  classes    output classes of a classifier head    conv_in / conv_out   convolution channels
  conv_w / conv_h   convolution window (never sharded)
"""

import math

import flax.linen as nn
import jax

_KERNEL_INIT = nn.initializers.lecun_normal()
_BIAS_INIT = nn.initializers.zeros_init()


def token_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                      preferred_element_type=None, **kwargs) -> jax.Array:
  """jax.lax.dot_general with the input's leading free axes (batch x length x ...) merged into
  one before the product and split again after it: the same arithmetic as one matrix product
  per token, which compilers handle at their best rate. XLA:CPU otherwise runs a
  B x L x D input's products, and above all their gradients (contracted over B and L at once),
  at about half the rate of the same products over a (B * L) x D matrix
  (benchmarks/RESULTS.md). Layers with dot_general=token_dot_general keep their
  parameters; qwix (QAT, LoRA) sees the same kernels."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
  free = lhs.ndim - len(lhs_contract)
  if lhs_batch or rhs_batch or free < 2 or tuple(lhs_contract) != tuple(range(free, lhs.ndim)):
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type,
                               **kwargs)
  flat = lhs.reshape(math.prod(lhs.shape[:free]), *lhs.shape[free:])  # any size, zero too
  out = jax.lax.dot_general(flat, rhs, ((tuple(range(1, flat.ndim)), rhs_contract), ((), ())),
                            precision, preferred_element_type, **kwargs)
  return out.reshape(*lhs.shape[:free], *out.shape[1:])


def dense(features: int, axes: tuple[str, str], name: str | None = None, **kwargs) -> nn.Dense:
  kwargs.setdefault("dot_general", token_dot_general)
  return nn.Dense(features, name=name,
                  kernel_init=nn.with_logical_partitioning(_KERNEL_INIT, axes),
                  bias_init=nn.with_logical_partitioning(_BIAS_INIT, (axes[1],)), **kwargs)


def conv(features: int, kernel_size: tuple[int, ...], name: str | None = None,
         kernel_init=_KERNEL_INIT, **kwargs) -> nn.Conv:
  """A 1-D or 2-D convolution (by len(kernel_size)) over channels-last inputs."""
  window = ("conv_h", "conv_w")[-len(kernel_size):]
  return nn.Conv(features, kernel_size, name=name,
                 kernel_init=nn.with_logical_partitioning(kernel_init, (*window, "conv_in", "conv_out")),
                 bias_init=nn.with_logical_partitioning(_BIAS_INIT, ("conv_out",)), **kwargs)


def conv_transpose(features: int, kernel_size: tuple[int, ...], name: str | None = None,
                   **kwargs) -> nn.ConvTranspose:
  """A 1-D or 2-D transposed convolution (upsampling by its strides), channels last."""
  window = ("conv_h", "conv_w")[-len(kernel_size):]
  return nn.ConvTranspose(
      features, kernel_size, name=name,
      kernel_init=nn.with_logical_partitioning(_KERNEL_INIT, (*window, "conv_in", "conv_out")),
      bias_init=nn.with_logical_partitioning(_BIAS_INIT, ("conv_out",)), **kwargs)


def embed(num: int, features: int, name: str | None = None) -> nn.Embed:
  """A table of `num` learned vectors (class embeddings of conditional models)."""
  return nn.Embed(num, features, name=name, embedding_init=nn.with_logical_partitioning(
      nn.initializers.normal(stddev=1.0), ("classes", "embed")))


def group_norm(groups: int, name: str | None = None, axis_name: str = "conv_out") -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, name=name,
                      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
                      bias_init=nn.with_logical_partitioning(_BIAS_INIT, (axis_name,)))


# config.model.mlp: a Transformer block's feed-forward network (and an MoE expert's). gelu is
# GPT-2's (tanh approximation), gelu_exact torchvision ViT's (erf), swiglu Llama's:
# down(silu(gate(x)) * up(x)).
MLPS = ("gelu", "gelu_exact", "swiglu")


def mlp_activation(kind: str, up: jax.Array, gate: jax.Array | None = None) -> jax.Array:
  """The hidden activations of an MLP from its up (and, for swiglu, gate) projections."""
  if kind == "swiglu":
    return nn.silu(gate) * up
  if kind not in MLPS:
    raise ValueError(f"mlp '{kind}' unknown; known: {', '.join(MLPS)}")
  return nn.gelu(up, approximate=kind == "gelu")


def mlp_hidden(x: jax.Array, width: int, kind: str, use_bias: bool, prefix: str = "mlp"
               ) -> jax.Array:
  """Called in a module's compact method: the hidden activations of a feed-forward network of
  `width` units (kind: MLPS), its dense layers named PREFIX_in (and PREFIX_gate for swiglu)."""
  up = dense(width, ("embed", "mlp"), name=f"{prefix}_in", use_bias=use_bias)(x)
  gate = (dense(width, ("embed", "mlp"), name=f"{prefix}_gate", use_bias=use_bias)(x)
          if kind == "swiglu" else None)
  return mlp_activation(kind, up, gate)


# A model sows into this collection in training (module.sow(AUX, name, scalar)): the mean of
# the values named "aux_loss" is added to the objective's loss, the others are logged as
# train/NAME (objectives/base.py, apply_with_aux). MoE routers use it (moe.py).
AUX = "aux"


# He (Kaiming) normal, fan-out: the initialization of torchvision's ResNets and DenseNets.
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, name: str | None = None, zero_init: bool = False,
               axis_name: str = "conv_out", sync_axis: str | None = None) -> nn.BatchNorm:
  """BatchNorm over every axis but the last. Under jit the batch axis is the global batch, so
  the statistics cover all devices' examples; under pmap each device sees its slice, and
  sync_axis (the model's layout.batch_norm_axis: the mapped axis) averages them over it.
  Running averages live in `batch_stats`. axis_name: the logical name of the channel axis."""
  scale_init = nn.initializers.zeros_init() if zero_init else nn.initializers.ones_init()
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name,
                      axis_name=sync_axis if train else None,
                      scale_init=nn.with_logical_partitioning(scale_init, (axis_name,)),
                      bias_init=nn.with_logical_partitioning(_BIAS_INIT, (axis_name,)))
