"""Dense and convolution layers whose parameters carry logical axis names.

Logical names used so far (sharding.py maps them to mesh axes):
  embed      features going into a dense layer      mlp       hidden units of a dense layer
  classes    output classes of a classifier head    conv_in / conv_out   convolution channels
  conv_w / conv_h   convolution window (never sharded)
"""

import flax.linen as nn

_KERNEL_INIT = nn.initializers.lecun_normal()
_BIAS_INIT = nn.initializers.zeros_init()


def dense(features: int, axes: tuple[str, str], name: str | None = None, **kwargs) -> nn.Dense:
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


# He (Kaiming) normal, fan-out: the initialization of torchvision's ResNets and DenseNets.
HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, name: str | None = None, zero_init: bool = False,
               axis_name: str = "conv_out") -> nn.BatchNorm:
  """BatchNorm over every axis but the last. Under jit the batch axis is the global batch, so
  the statistics cover all devices' examples; running averages live in `batch_stats`."""
  scale_init = nn.initializers.zeros_init() if zero_init else nn.initializers.ones_init()
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name,
                      scale_init=nn.with_logical_partitioning(scale_init, (axis_name,)),
                      bias_init=nn.with_logical_partitioning(_BIAS_INIT, (axis_name,)))
