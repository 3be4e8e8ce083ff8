"""ResNet (He et al. 2016) in torchvision's v1.5 form, its CIFAR variant, and ResNeXt.

ImageNet ResNets: 7x7/2 stem + 3x3/2 max-pool; BasicBlocks (18, 34) or Bottlenecks (50, 101, 152)
with the stride on the bottleneck's 3x3 convolution (v1.5). ResNeXt: Bottlenecks with grouped 3x3
convolutions (`groups`, `width_per_group`, e.g. 50 32x4d). CIFAR ResNets (`stem="cifar"`): a 3x3/1
stem without pooling, for 32x32 images. Parameter counts equal torchvision's exactly
(tests/test_convnets.py). Projection shortcuts (1x1 conv + BN) where shape changes.
Sequences (B x L or B x L x C) get 1-D convolutions of the same shapes.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax

from bigmodel_jax.models.layers import HE_NORMAL, batch_norm, conv, dense
from bigmodel_jax.models.layout import Layout

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3)}


class BasicBlock(nn.Module):
  planes: int
  strides: int = 1
  zero_init_residual: bool = False
  sync_axis: str | None = None  # BatchNorm's (layers.batch_norm)
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k3 = (3,) * (x.ndim - 2)
    y = conv(self.planes, k3, strides=self.strides, padding=1, use_bias=False,
             kernel_init=HE_NORMAL, name="conv1")(x)
    y = nn.relu(batch_norm(train, "bn1", sync_axis=self.sync_axis)(y))
    y = conv(self.planes, k3, padding=1, use_bias=False, kernel_init=HE_NORMAL, name="conv2")(y)
    y = batch_norm(train, "bn2", zero_init=self.zero_init_residual,
                   sync_axis=self.sync_axis)(y)
    return nn.relu(y + _shortcut(x, self.planes, self.strides, train, self.sync_axis))


class Bottleneck(nn.Module):
  planes: int
  strides: int = 1
  zero_init_residual: bool = False
  groups: int = 1
  width_per_group: int = 64
  sync_axis: str | None = None  # BatchNorm's (layers.batch_norm)
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    width = self.planes * self.width_per_group // 64 * self.groups
    if width < self.groups:
      raise ValueError(f"bottleneck width {width} is smaller than groups={self.groups}: raise "
                       "width_per_group or the stage widths")
    k1, k3 = (1,) * (x.ndim - 2), (3,) * (x.ndim - 2)
    y = conv(width, k1, use_bias=False, kernel_init=HE_NORMAL, name="conv1")(x)
    y = nn.relu(batch_norm(train, "bn1", sync_axis=self.sync_axis)(y))
    y = conv(width, k3, strides=self.strides, padding=1, use_bias=False,
             feature_group_count=self.groups, kernel_init=HE_NORMAL, name="conv2")(y)
    y = nn.relu(batch_norm(train, "bn2", sync_axis=self.sync_axis)(y))
    y = conv(self.planes * 4, k1, use_bias=False, kernel_init=HE_NORMAL, name="conv3")(y)
    y = batch_norm(train, "bn3", zero_init=self.zero_init_residual,
                   sync_axis=self.sync_axis)(y)
    return nn.relu(y + _shortcut(x, self.planes * 4, self.strides, train,
                               self.sync_axis))


def _shortcut(x: jax.Array, features: int, strides: int, train: bool,
              sync_axis: str | None) -> jax.Array:
  if strides == 1 and x.shape[-1] == features:
    return x
  x = conv(features, (1,) * (x.ndim - 2), strides=strides, use_bias=False, kernel_init=HE_NORMAL,
           name="proj_conv")(x)
  return batch_norm(train, "proj_bn", sync_axis=sync_axis)(x)


class ResNet(nn.Module):
  """`depth` picks the stages and block (18/34 basic, 50+ bottleneck); `stage_sizes` overrides it
  (tiny test variants); `widths` are the stages' base channels."""

  num_classes: int
  depth: int = 50
  stem: str = "imagenet"  # imagenet (7x7/2 + max-pool) or cifar (3x3/1)
  stage_sizes: Sequence[int] = ()  # () = from depth
  widths: Sequence[int] = (64, 128, 256, 512)
  bottleneck: bool | None = None  # None = from depth (>= 50)
  groups: int = 1  # ResNeXt cardinality
  width_per_group: int = 64  # ResNeXt bottleneck width
  zero_init_residual: bool = False  # zero-init each block's last BN scale (Goyal et al. 2017)
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if self.depth not in STAGES and not self.stage_sizes:
      raise ValueError(f"resnet depth {self.depth} unknown; known: {sorted(STAGES)}")
    stages = tuple(self.stage_sizes) or STAGES[self.depth]
    bottleneck = self.depth >= 50 if self.bottleneck is None else self.bottleneck
    if x.ndim == 2:
      x = x[..., None]  # B x L -> B x L x 1
    nd = x.ndim - 2
    if self.stem == "imagenet":
      x = conv(self.widths[0], (7,) * nd, strides=2, padding=3, use_bias=False,
               kernel_init=HE_NORMAL, name="stem_conv")(x)
      x = nn.relu(batch_norm(train, "stem_bn", sync_axis=self.layout.batch_norm_axis)(x))
      x = nn.max_pool(x, (3,) * nd, strides=(2,) * nd, padding=((1, 1),) * nd)
    elif self.stem == "cifar":
      x = conv(self.widths[0], (3,) * nd, padding=1, use_bias=False, kernel_init=HE_NORMAL,
               name="stem_conv")(x)
      x = nn.relu(batch_norm(train, "stem_bn", sync_axis=self.layout.batch_norm_axis)(x))
    else:
      raise ValueError(f"resnet stem '{self.stem}' unknown; known: imagenet, cifar")
    for i, (blocks, width) in enumerate(zip(stages, self.widths)):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        if bottleneck:
          block = Bottleneck(width, strides, self.zero_init_residual, self.groups,
                             self.width_per_group, self.layout.batch_norm_axis,
                             name=f"stage{i + 1}_block{j + 1}")
        else:
          block = BasicBlock(width, strides, self.zero_init_residual,
                             sync_axis=self.layout.batch_norm_axis, name=f"stage{i + 1}_block{j + 1}")
        x = block(x, train)
    x = x.mean(axis=tuple(range(1, nd + 1)))  # global average pool
    return dense(self.num_classes, ("embed", "classes"), name="head")(x)
