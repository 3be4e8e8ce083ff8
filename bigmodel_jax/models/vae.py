"""Variational autoencoder: a Gaussian encoder q(z|x[, y]) and a decoder p(x|z[, y]).

MLP (`hidden`, the flax example's 500 hidden / 20 latents) or convolutional (`channels`: stride-2
convolutions down, transposed convolutions back up), 1-D signals or 2-D images; `conditional`
feeds the class (one-hot) to both. The decoder returns one logit (binomial, bernoulli) or mean
(gaussian) per input value; the likelihood and the ELBO are the objective's (objectives/vae.py).
"""

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import conv, conv_transpose, dense


class Encoder(nn.Module):
  latents: int
  hidden: Sequence[int]
  channels: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array, onehot: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    if x.ndim == 2:
      x = x[..., None]
    nd = x.ndim - 2
    for i, ch in enumerate(self.channels):
      x = nn.relu(conv(ch, (4,) * nd, strides=2, padding="SAME", name=f"conv_{i}")(x))
    x = x.reshape(x.shape[0], -1)
    if onehot is not None:
      x = jnp.concatenate([x, onehot], -1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(dense(width, ("embed", "mlp"), name=f"dense_{i}")(x))
    mean = dense(self.latents, ("mlp", "embed"), name="mean")(x)
    log_var = dense(self.latents, ("mlp", "embed"), name="log_var")(x)
    return mean, log_var


class Decoder(nn.Module):
  hidden: Sequence[int]
  channels: Sequence[int]

  @nn.compact
  def __call__(self, z: jax.Array, onehot: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
    if onehot is not None:
      z = jnp.concatenate([z, onehot], -1)
    for i, width in enumerate(reversed(self.hidden)):
      z = nn.relu(dense(width, ("embed", "mlp"), name=f"dense_{i}")(z))
    if not self.channels:
      return dense(math.prod(shape), ("mlp", "embed"), name="out")(z).reshape(-1, *shape)
    spatial = shape[:-1] if len(shape) > 1 else shape  # B x L signals get a channel axis
    out_channels = shape[-1] if len(shape) > 1 else 1
    down = 2 ** len(self.channels)
    if any(s % down for s in spatial):
      raise ValueError(f"vae: inputs of shape {shape} do not halve {len(self.channels)} times")
    small = tuple(s // down for s in spatial)
    x = dense(math.prod(small) * self.channels[-1], ("mlp", "embed"), name="project")(z)
    x = nn.relu(x.reshape(-1, *small, self.channels[-1]))
    for i, ch in enumerate(list(reversed(self.channels))[1:]):
      x = nn.relu(conv_transpose(ch, (4,) * len(small), strides=(2,) * len(small),
                                 name=f"up_{i}")(x))
    x = conv_transpose(out_channels, (4,) * len(small), strides=(2,) * len(small), name="out")(x)
    return x.reshape(-1, *shape)


class VAE(nn.Module):
  num_classes: int
  latents: int = 20
  hidden: Sequence[int] = (500,)
  channels: Sequence[int] = ()  # non-empty: convolutional encoder and decoder
  conditional: bool = False

  def setup(self) -> None:
    self.encoder = Encoder(self.latents, self.hidden, self.channels)
    self.decoder = Decoder(self.hidden, self.channels)
    # the log standard deviation of a gaussian likelihood (unused by the others)
    self.log_scale = self.param("log_scale", nn.with_logical_partitioning(
        nn.initializers.zeros_init(), ()), ())

  def _onehot(self, labels: jax.Array | None, batch: int) -> jax.Array | None:
    if not self.conditional:
      return None
    labels = jnp.zeros((batch,), jnp.int32) if labels is None else labels
    return jax.nn.one_hot(labels, self.num_classes)

  def encode(self, x: jax.Array, labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x, self._onehot(labels, x.shape[0]))

  def decode(self, z: jax.Array, shape: tuple[int, ...],
             labels: jax.Array | None = None) -> jax.Array:
    return self.decoder(z, self._onehot(labels, z.shape[0]), shape)

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    """The decoder's output at the posterior mean (initialization, FLOPs)."""
    del train
    mean, _ = self.encode(x)
    return self.decode(mean, tuple(x.shape[1:])) + 0 * self.log_scale
