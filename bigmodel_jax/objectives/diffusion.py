"""Denoising diffusion (DDPM, Ho et al. 2020): corrupt x0 (scaled to [-1, 1]) to
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
at a random t of `timesteps`, and regress eps (mean squared error per value). The noise schedule
is "cosine" (Nichol & Dhariwal 2021) or "linear" (1e-4 .. 0.02). Conditional models drop the label
to "no class" with probability `label_dropout`, so one network is both conditional and not, and
samples use classifier-free guidance (Ho & Salimans 2022): eps = (1 + w) eps(x, y) - w eps(x).
Samples come from DDIM (Song et al. 2021, eta 0: deterministic) with `sample_steps` steps.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.objectives.base import Objective, apply

SCHEDULES = ("cosine", "linear")


def alphas_cumprod(schedule: str, timesteps: int) -> np.ndarray:
  """abar_t for t = 0 .. timesteps - 1 (float64)."""
  if schedule == "linear":
    return np.cumprod(1 - np.linspace(1e-4, 0.02, timesteps))
  s = 0.008
  f = np.cos((np.arange(timesteps + 1) / timesteps + s) / (1 + s) * math.pi / 2) ** 2
  betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
  return np.cumprod(1 - betas)


class Diffusion(Objective):
  can_sample = True

  def __init__(self, model, input_shape, num_classes, timesteps: int = 1000,
               noise_schedule: str = "cosine", label_dropout: float = 0.1,
               sample_steps: int = 50, guidance: float = 1.0):
    super().__init__(model, input_shape, num_classes)
    if noise_schedule not in SCHEDULES:
      raise ValueError(f"objective.noise_schedule must be one of {', '.join(SCHEDULES)}, "
                       f"got '{noise_schedule}'")
    if not 1 <= sample_steps <= timesteps:
      raise ValueError(f"objective.sample_steps must be in [1, timesteps={timesteps}], "
                       f"got {sample_steps}")
    self.timesteps, self.label_dropout = timesteps, label_dropout
    self.sample_steps, self.guidance = sample_steps, guidance
    self.abar = alphas_cumprod(noise_schedule, timesteps).astype(np.float32)

  def _noise(self, params, x_t, t, labels, compute_dtype=None):
    return apply(self.model, params, {}, x_t, compute_dtype=compute_dtype, t=t, labels=labels)

  def _errors(self, params, batch, rng, labels, compute_dtype):
    """Per-example mean squared error of the predicted noise, at random t."""
    x0 = batch["inputs"] * 2 - 1
    t_rng, eps_rng = jax.random.split(rng)
    t = jax.random.randint(t_rng, x0.shape[:1], 0, self.timesteps)
    eps = jax.random.normal(eps_rng, x0.shape)
    abar = jnp.asarray(self.abar)[t].reshape(-1, *(1,) * (x0.ndim - 1))
    x_t = jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * eps
    pred = self._noise(params, x_t, t, labels, compute_dtype)
    return jnp.square(pred - eps).reshape(x0.shape[0], -1).mean(-1)

  def loss(self, params, model_state, batch, rng, compute_dtype=None):
    labels = None
    if self.conditional:  # classifier-free guidance: some rows learn without their class
      rng, drop_rng = jax.random.split(rng)
      drop = jax.random.bernoulli(drop_rng, self.label_dropout, batch["label"].shape)
      labels = jnp.where(drop, self.num_classes, batch["label"])
    mse = self._errors(params, batch, rng, labels, compute_dtype)
    return jnp.sum(mse * batch["weights"]), {}, model_state

  def evaluate(self, variables, batch, rng, compute_dtype=None):
    labels = batch["label"] if self.conditional else None
    return {"loss": self._errors(variables["params"], batch, rng, labels, compute_dtype)}

  def sample(self, variables, rng, labels_N):
    params = variables["params"]
    n = labels_N.shape[0]
    times = np.linspace(self.timesteps - 1, 0, self.sample_steps).round().astype(np.int32)
    abar = jnp.asarray(self.abar)
    prev = np.append(times[1:], -1)  # -1: abar = 1, the clean image

    def eps_of(x, t):
      t_N = jnp.full((n,), t)
      if not self.conditional:
        return self._noise(params, x, t_N, None)
      both = self._noise(params, jnp.concatenate([x, x]), jnp.concatenate([t_N, t_N]),
                         jnp.concatenate([labels_N, jnp.full((n,), self.num_classes)]))
      cond, uncond = both[:n], both[n:]
      return (1 + self.guidance) * cond - self.guidance * uncond

    def step(x, ts):
      t, t_prev = ts
      a, a_prev = abar[t], jnp.where(t_prev >= 0, abar[jnp.maximum(t_prev, 0)], 1.0)
      eps = eps_of(x, t)
      x0 = jnp.clip((x - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a), -1, 1)
      eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
      return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev) * eps, None

    x = jax.random.normal(rng, (n, *self.input_shape))
    x, _ = jax.lax.scan(step, x, (jnp.asarray(times), jnp.asarray(prev)))
    return (jnp.clip(x, -1, 1) + 1) / 2
