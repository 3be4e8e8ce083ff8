"""MobileNet v1 (Howard et al. 2017): a 3x3/2 stem, then depthwise-separable blocks
(3x3 depthwise conv + BN + ReLU, 1x1 pointwise conv + BN + ReLU). At width 1.0 and 1,000 classes
it has Keras's 4,231,976 trainable parameters (tests/test_models.py)."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from bigmodel_jax.models.layout import Layout
from bigmodel_jax.models.layers import batch_norm, conv, dense

# (output channels, stride) of each depthwise-separable block.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNet(nn.Module):
  num_classes: int
  width: float = 1.0  # channel multiplier (alpha)
  stem_strides: int = 2  # 1 for small images
  blocks: Sequence[tuple[int, int]] = BLOCKS
  dropout: float = 0.0
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    bn = lambda name: batch_norm(train, name, sync_axis=self.layout.batch_norm_axis)  # noqa: E731
    ch = lambda c: max(8, int(c * self.width))
    x = conv(ch(32), (3, 3), strides=self.stem_strides, padding=1, use_bias=False, name="stem_conv")(x)
    x = nn.relu(bn("stem_bn")(x))
    for i, (out, strides) in enumerate(self.blocks):
      x = conv(x.shape[-1], (3, 3), strides=strides, padding=1, use_bias=False,
               feature_group_count=x.shape[-1], name=f"block{i + 1}_depthwise")(x)
      x = nn.relu(bn(f"block{i + 1}_depthwise_bn")(x))
      x = conv(ch(out), (1, 1), use_bias=False, name=f"block{i + 1}_pointwise")(x)
      x = nn.relu(bn(f"block{i + 1}_pointwise_bn")(x))
    x = x.mean(axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(self.num_classes, ("embed", "classes"), name="head")(x)
