"""Variational autoencoder (Kingma & Welling 2014): maximize the ELBO
  log p(x) >= E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I)),
trained with one reparameterized sample per example. The likelihood p(x|z), per input value:
  binomial  counts k = x * levels of `levels` trials (digits: 0..16 per pixel): a proper discrete
            likelihood, so the negative ELBO and NLL are nats of the data's actual values
  bernoulli the cross entropy of intensities in [0, 1] (the usual choice; not a normalized
            density for values other than 0 and 1)
  gaussian  a mean per value and one learned scale (continuous data such as MNIST-1D: a density)
Eval: loss = the negative ELBO in nats per example (one sample), nll_iwae = the importance-
weighted bound with `iwae_samples` samples (Burda et al. 2016), tighter, still >= the NLL.
"""

import math

import jax
import jax.numpy as jnp

from bigmodel_jax.objectives.base import Objective, apply

LIKELIHOODS = ("binomial", "bernoulli", "gaussian")


class VAE(Objective):
  can_sample = True

  def __init__(self, model, input_shape, num_classes, likelihood: str = "binomial",
               levels: int = 16, iwae_samples: int = 100, beta: float = 1.0):
    super().__init__(model, input_shape, num_classes)
    if likelihood not in LIKELIHOODS:
      raise ValueError(f"objective.likelihood must be one of {', '.join(LIKELIHOODS)}, "
                       f"got '{likelihood}'")
    self.likelihood, self.levels, self.iwae_samples, self.beta = (likelihood, levels,
                                                                   iwae_samples, beta)

  def _log_px(self, params, out, x):
    """log p(x | decoder output), summed over an example's values: ... x D -> ..."""
    if self.likelihood == "binomial":
      n = float(self.levels)
      k = jnp.clip(jnp.round(x * n), 0, n)
      log_choose = (jax.lax.lgamma(n + 1) - jax.lax.lgamma(k + 1) - jax.lax.lgamma(n - k + 1))
      lp = log_choose + k * jax.nn.log_sigmoid(out) + (n - k) * jax.nn.log_sigmoid(-out)
    elif self.likelihood == "bernoulli":
      lp = x * jax.nn.log_sigmoid(out) + (1 - x) * jax.nn.log_sigmoid(-out)
    else:
      log_scale = params["log_scale"]
      lp = (-0.5 * jnp.square((x - out) * jnp.exp(-log_scale)) - log_scale
            - 0.5 * math.log(2 * math.pi))
    return lp.reshape(*lp.shape[:-len(self.input_shape)], -1).sum(-1)

  def _encode(self, params, x, labels, compute_dtype):
    return apply(self.model, params, {}, x, labels, method="encode", compute_dtype=compute_dtype)

  def _decode(self, params, z, labels, compute_dtype=None):
    return apply(self.model, params, {}, z, self.input_shape, labels, method="decode",
                 compute_dtype=compute_dtype)

  def loss(self, params, model_state, batch, rng, compute_dtype=None):
    x, labels, w = batch["inputs"], self.labels(batch), batch["weights"]
    mean, log_var = self._encode(params, x, labels, compute_dtype)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    rec = -self._log_px(params, self._decode(params, z, labels, compute_dtype), x)
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1 - log_var, -1)
    sums = {"nelbo": jnp.sum((rec + kl) * w), "reconstruction": jnp.sum(rec * w),
            "kl": jnp.sum(kl * w)}
    return jnp.sum((rec + self.beta * kl) * w), sums, model_state

  def evaluate(self, variables, batch, rng, compute_dtype=None):
    params, x, labels = variables["params"], batch["inputs"], self.labels(batch)
    mean, log_var = self._encode(params, x, labels, compute_dtype)
    std = jnp.exp(0.5 * log_var)
    k, (b, latents) = self.iwae_samples, mean.shape
    eps_KxBxZ = jax.random.normal(rng, (k, b, latents))
    z = mean + std * eps_KxBxZ
    out = self._decode(params, z.reshape(k * b, latents), jnp.tile(labels, k), compute_dtype)
    log_px_KxB = self._log_px(params, out.reshape(k, b, *self.input_shape), x[None])
    normal = lambda v: -0.5 * jnp.sum(jnp.square(v) + math.log(2 * math.pi), -1)  # noqa: E731
    log_w = log_px_KxB + normal(z) - (normal(eps_KxBxZ) - jnp.sum(jnp.log(std), -1))
    kl = 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1 - log_var, -1)
    nelbo = -log_px_KxB[0] + kl  # one sample, as in training
    nll_iwae = -(jax.nn.logsumexp(log_w, 0) - math.log(k))
    return {"loss": nelbo, "nelbo": nelbo, "nll_iwae": nll_iwae, "kl": kl}

  def sample(self, variables, rng, labels_N):
    z = jax.random.normal(rng, (labels_N.shape[0], self.model.latents))
    out = self._decode(variables["params"], z, labels_N)
    if self.likelihood == "gaussian":
      return out
    return jax.nn.sigmoid(out)  # the likelihood's mean (as a fraction of levels)
