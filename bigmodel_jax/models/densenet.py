"""DenseNet (Huang et al. 2017) as in torchvision: each layer is BN-ReLU-1x1 conv (bn_size x growth)
-BN-ReLU-3x3 conv (growth), its output concatenated to its input; transitions halve channels
(BN-ReLU-1x1 conv) and resolution (2x2 average pool). DenseNet-121: blocks (6, 12, 24, 16),
growth 32, 7,978,856 parameters for 1,000 classes, as torchvision's (tests/test_models.py)."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layout import Layout
from bigmodel_jax.models.layers import HE_NORMAL, batch_norm, conv, dense

VARIANTS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}


class DenseNet(nn.Module):
  num_classes: int
  depth: int = 121
  block_sizes: Sequence[int] = ()  # () = from depth
  growth: int = 32
  bn_size: int = 4
  stem_features: int = 64
  stem: str = "imagenet"  # imagenet (7x7/2 + max-pool) or cifar (3x3/1)
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    bn = lambda name: batch_norm(train, name, sync_axis=self.layout.batch_norm_axis)  # noqa: E731
    if self.depth not in VARIANTS and not self.block_sizes:
      raise ValueError(f"densenet depth {self.depth} unknown; known: {sorted(VARIANTS)}")
    blocks = tuple(self.block_sizes) or VARIANTS[self.depth]
    if self.stem == "imagenet":
      x = conv(self.stem_features, (7, 7), strides=2, padding=3, use_bias=False,
               kernel_init=HE_NORMAL, name="stem_conv")(x)
      x = nn.relu(bn("stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.stem_features, (3, 3), padding=1, use_bias=False, kernel_init=HE_NORMAL,
               name="stem_conv")(x)
    for i, layers in enumerate(blocks):
      for j in range(layers):
        y = nn.relu(bn(f"block{i + 1}_layer{j + 1}_bn1")(x))
        y = conv(self.bn_size * self.growth, (1, 1), use_bias=False, kernel_init=HE_NORMAL,
                 name=f"block{i + 1}_layer{j + 1}_conv1")(y)
        y = nn.relu(bn(f"block{i + 1}_layer{j + 1}_bn2")(y))
        y = conv(self.growth, (3, 3), padding=1, use_bias=False, kernel_init=HE_NORMAL,
                 name=f"block{i + 1}_layer{j + 1}_conv2")(y)
        x = jnp.concatenate([x, y], axis=-1)
      if i < len(blocks) - 1:
        x = nn.relu(bn(f"transition{i + 1}_bn")(x))
        x = conv(x.shape[-1] // 2, (1, 1), use_bias=False, kernel_init=HE_NORMAL,
                 name=f"transition{i + 1}_conv")(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(bn("final_bn")(x)).mean(axis=(1, 2))
    return dense(self.num_classes, ("embed", "classes"), name="head")(x)
