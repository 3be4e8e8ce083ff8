"""Rotary position embedding (Su et al. 2021) and the context-extension scalings that pretrained
checkpoints carry (Hugging Face's rope_type), computed as transformers computes them:

  none     inverse frequencies base^(-i / half), i < half (rope_type "default")
  linear   all of them divided by `factor` (position interpolation)
  llama3   Llama 3.1's: wavelengths above original_max_len / low_freq_factor divided by
           `factor`, those below original_max_len / high_freq_factor kept, and in between a
           smooth interpolation of the two
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

SCALINGS = ("none", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class Rope:
  """A model's rotary positions: config.model's rope_* keys (transformer.TransformerConfig
  inherits them; hashable, a module attribute)."""

  rope_base: float = 10000.0  # Llama's rope_theta
  rope_scaling: str = "none"  # SCALINGS
  rope_factor: float = 1.0  # linear, llama3: how much longer the context is made
  rope_low_freq_factor: float = 1.0  # llama3
  rope_high_freq_factor: float = 4.0  # llama3
  rope_original_max_len: int = 8192  # llama3: the context trained before the extension

  def frequencies(self, half: int) -> jax.Array:
    """half float32: the inverse frequency of each pair of features."""
    if self.rope_scaling not in SCALINGS:
      raise ValueError(f"rope_scaling '{self.rope_scaling}' unknown; known: {', '.join(SCALINGS)}")
    freq_H2 = self.rope_base ** (-jnp.arange(half, dtype=jnp.float32) / half)
    if self.rope_scaling == "linear":
      return freq_H2 / self.rope_factor
    if self.rope_scaling == "llama3":
      if not self.rope_high_freq_factor > self.rope_low_freq_factor:
        raise ValueError(f"llama3 rope scaling needs rope_high_freq_factor "
                         f"({self.rope_high_freq_factor}) > rope_low_freq_factor "
                         f"({self.rope_low_freq_factor})")
      wavelength = 2 * math.pi / freq_H2
      scaled = jnp.where(wavelength > self.rope_original_max_len / self.rope_low_freq_factor,
                         freq_H2 / self.rope_factor, freq_H2)
      smooth = ((self.rope_original_max_len / wavelength - self.rope_low_freq_factor)
                / (self.rope_high_freq_factor - self.rope_low_freq_factor))
      medium = ((wavelength >= self.rope_original_max_len / self.rope_high_freq_factor)
                & (wavelength <= self.rope_original_max_len / self.rope_low_freq_factor))
      return jnp.where(medium, (1 - smooth) * scaled / self.rope_factor + smooth * scaled, scaled)
    return freq_H2


def rotary(x_BxLxNxH: jax.Array, positions_BxL: jax.Array, rope: Rope = Rope()) -> jax.Array:
  """The rotation on the two halves of each head."""
  half = x_BxLxNxH.shape[-1] // 2
  angle_BxLx1xH2 = positions_BxL[:, :, None, None].astype(jnp.float32) * rope.frequencies(half)
  sin, cos = jnp.sin(angle_BxLx1xH2), jnp.cos(angle_BxLx1xH2)
  x1, x2 = x_BxLxNxH[..., :half], x_BxLxNxH[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BxLxNxH.dtype)
