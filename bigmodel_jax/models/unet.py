"""A small U-Net that predicts the noise of a diffusion model (objectives/diffusion.py).

Residual blocks (GroupNorm, SiLU, 3x3 convolutions) at each width of `channels`, halving the
resolution between widths and doubling it back with skip connections; the timestep enters every
block as a sinusoidal embedding through an MLP, and with `conditional` a class embedding is added
to it (class `num_classes` is "no class": classifier-free guidance trains on it). 1-D signals or
2-D images, channels last.
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import conv, dense, embed, group_norm


def timestep_embedding(t_B: jax.Array, dim: int) -> jax.Array:
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / half)
  angles = t_B.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)


class ResBlock(nn.Module):
  features: int
  groups: int

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
    nd = x.ndim - 2
    h = conv(self.features, (3,) * nd, name="conv_0")(nn.silu(group_norm(
        min(self.groups, x.shape[-1]), name="norm_0")(x)))
    h += dense(self.features, ("mlp", "conv_out"), name="emb")(emb).reshape(
        emb.shape[0], *(1,) * nd, self.features)
    h = conv(self.features, (3,) * nd, name="conv_1", kernel_init=nn.initializers.zeros)(
        nn.silu(group_norm(self.groups, name="norm_1")(h)))
    if x.shape[-1] != self.features:
      x = conv(self.features, (1,) * nd, name="skip")(x)
    return x + h


class UNet(nn.Module):
  num_classes: int
  channels: Sequence[int] = (32, 64)
  emb_dim: int = 128
  groups: int = 8
  conditional: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, t: jax.Array | None = None,
               labels: jax.Array | None = None) -> jax.Array:
    """x B x ... x C (or B x L), t B int timesteps, labels B (num_classes = none) -> noise."""
    del train
    squeeze = x.ndim == 2
    if squeeze:
      x = x[..., None]
    nd = x.ndim - 2
    t = jnp.zeros((x.shape[0],), jnp.int32) if t is None else t
    emb = dense(self.emb_dim, ("embed", "mlp"), name="time_0")(
        timestep_embedding(t, self.emb_dim))
    emb = dense(self.emb_dim, ("mlp", "embed"), name="time_1")(nn.silu(emb))
    if self.conditional:
      labels = jnp.full((x.shape[0],), self.num_classes) if labels is None else labels
      emb += embed(self.num_classes + 1, self.emb_dim, name="class_embedding")(labels)
    emb = nn.silu(emb)
    h = conv(self.channels[0], (3,) * nd, name="stem")(x)
    skips = []
    for i, ch in enumerate(self.channels):
      h = ResBlock(ch, self.groups, name=f"down_{i}")(h, emb)
      skips.append(h)
      if i < len(self.channels) - 1:
        h = conv(ch, (3,) * nd, strides=2, name=f"downsample_{i}")(h)
    h = ResBlock(self.channels[-1], self.groups, name="middle")(h, emb)
    for i, ch in reversed(list(enumerate(self.channels))):
      if i < len(self.channels) - 1:
        h = jnp.repeat(h, 2, axis=1) if nd == 1 else jnp.repeat(jnp.repeat(h, 2, 1), 2, 2)
        h = conv(ch, (3,) * nd, name=f"upsample_{i}")(h)
      h = ResBlock(ch, self.groups, name=f"up_{i}")(jnp.concatenate([h, skips[i]], -1), emb)
    out = conv(x.shape[-1], (3,) * nd, name="out", kernel_init=nn.initializers.zeros)(
        nn.silu(group_norm(self.groups, name="out_norm")(h)))
    return out[..., 0] if squeeze else out
