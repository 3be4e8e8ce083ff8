"""A DCGAN-style generator and discriminator for small images (2-D) or signals (1-D).

Generator: latents (+ a class embedding) -> a dense layer to a (H/2^n) x (W/2^n) x channels[0]
map -> n transposed convolutions of stride 2 (BatchNorm and ReLU between) -> sigmoid, values in
[0, 1] like the scaled data. Discriminator: stride-2 convolutions with leaky ReLU (no
BatchNorm), a linear score, and with `conditional` a projection term <embed(y), features>
(Miyato & Koyama 2018). One module holds both: params {"generator", "discriminator"}, each
trained by its own optimizer (objectives/gan.py).
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import batch_norm, conv, conv_transpose, dense, embed
from bigmodel_jax.models.layout import Layout


class Generator(nn.Module):
  num_classes: int
  channels: Sequence[int]
  conditional: bool
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, z: jax.Array, labels: jax.Array, shape: tuple[int, ...], *,
               train: bool) -> jax.Array:
    spatial = shape[:-1] if len(shape) > 1 else shape
    out_channels = shape[-1] if len(shape) > 1 else 1
    up = 2 ** len(self.channels)
    if any(s % up for s in spatial):
      raise ValueError(f"gan: inputs of shape {shape} do not halve {len(self.channels)} times")
    if self.conditional:
      # the class scales the latents (multiplicative, not concatenated: a concatenated class
      # embedding let the generator ignore z, one image per class, in our runs)
      z = z * embed(self.num_classes, z.shape[-1], name="class_embedding")(labels)
    small = tuple(s // up for s in spatial)
    x = dense(math.prod(small) * self.channels[0], ("embed", "mlp"), name="project")(z)
    x = x.reshape(-1, *small, self.channels[0])
    x = nn.relu(batch_norm(train, "project_bn", sync_axis=self.layout.batch_norm_axis)(x))
    for i, ch in enumerate(list(self.channels[1:]) + [out_channels]):
      x = conv_transpose(ch, (4,) * len(small), strides=(2,) * len(small), name=f"up_{i}")(x)
      if i < len(self.channels) - 1:
        x = nn.relu(batch_norm(train, f"up_{i}_bn", sync_axis=self.layout.batch_norm_axis)(x))
    # Named (batch over the data axes): without it XLA's SPMD partitioner, fusing the generator
    # into the discriminator under fsdp, computed D(G(z)) wrong (tests/test_generative.py).
    return self.layout.constrain(nn.sigmoid(x).reshape(-1, *shape),
                                ("batch",) + (None,) * len(shape))


class Discriminator(nn.Module):
  num_classes: int
  channels: Sequence[int]
  conditional: bool

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    if x.ndim == 2:
      x = x[..., None]
    nd = x.ndim - 2
    for i, ch in enumerate(self.channels):
      x = nn.leaky_relu(conv(ch, (4,) * nd, strides=2, padding="SAME", name=f"conv_{i}")(x), 0.2)
    h = x.reshape(x.shape[0], -1)
    score = dense(1, ("embed", "classes"), name="score")(h)[:, 0]
    if self.conditional:
      score += jnp.sum(embed(self.num_classes, h.shape[-1], name="class_projection")(labels) * h, -1)
    return score


class GAN(nn.Module):
  num_classes: int
  latents: int = 64
  generator_channels: Sequence[int] = (128, 64)
  discriminator_channels: Sequence[int] = (64, 128)
  conditional: bool = False
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  def setup(self) -> None:
    self.generator = Generator(self.num_classes, self.generator_channels, self.conditional,
                               self.layout)
    self.discriminator = Discriminator(self.num_classes, self.discriminator_channels,
                                       self.conditional)

  def generate(self, z: jax.Array, labels: jax.Array, shape: tuple[int, ...], *,
               train: bool = False) -> jax.Array:
    return self.generator(z, labels, shape, train=train)

  def discriminate(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    return self.discriminator(x, labels)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """D(x) + D(G(z)) at zero latents and class 0 (initialization of both networks, FLOPs)."""
    labels = jnp.zeros((x.shape[0],), jnp.int32)
    fake = self.generate(jnp.zeros((x.shape[0], self.latents)), labels, tuple(x.shape[1:]),
                         train=train)
    return self.discriminate(x, labels) + self.discriminate(fake, labels)
