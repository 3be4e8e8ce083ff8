"""Generative adversarial network (Goodfellow et al. 2014), the generator and the discriminator
each with its own optimizer (config.optimizer and config.optimizers.discriminator).

Both networks are updated at every step from one backward pass: the discriminator's loss sees
the generated images through stop_gradient, and the generator's loss sees the discriminator's
parameters through stop_gradient, so the gradient of their sum with respect to each network's
parameters is the gradient of that network's own loss (simultaneous updates). Losses:
  non_saturating  D: -log D(x) - log(1 - D(G(z)));  G: -log D(G(z))
  hinge           D: relu(1 - D(x)) + relu(1 + D(G(z)));  G: -D(G(z))
"""

import jax
import jax.numpy as jnp

from bigmodel_jax.objectives.base import Objective, apply

LOSSES = ("non_saturating", "hinge")


class GAN(Objective):  # networks: generator, discriminator (config_rules.OBJECTIVES)
  can_sample = True

  def __init__(self, model, input_shape, num_classes, loss: str = "non_saturating"):
    super().__init__(model, input_shape, num_classes)
    if loss not in LOSSES:
      raise ValueError(f"objective.loss must be one of {', '.join(LOSSES)}, got '{loss}'")
    self.kind = loss

  def _losses(self, d_real, d_fake, d_generated):
    if self.kind == "hinge":
      return jax.nn.relu(1 - d_real) + jax.nn.relu(1 + d_fake), -d_generated
    return jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake), jax.nn.softplus(-d_generated)

  def _generate(self, params, model_state, rng, labels, train, compute_dtype=None):
    z = jax.random.normal(rng, (labels.shape[0], self.model.latents))
    return apply(self.model, params, model_state, z, labels, self.input_shape, method="generate",
                 train=train, mutable=True, compute_dtype=compute_dtype)

  def loss(self, params, model_state, batch, rng, compute_dtype=None):
    x, labels, w = batch["inputs"], self.labels(batch), batch["weights"]
    fake, model_state = self._generate(params, model_state, rng, labels, True, compute_dtype)
    d = lambda p, images: apply(self.model, p, {}, images, labels, method="discriminate",  # noqa: E731
                                compute_dtype=compute_dtype)
    frozen_d = {**params, "discriminator": jax.lax.stop_gradient(params["discriminator"])}
    d_real, d_fake = d(params, x), d(params, jax.lax.stop_gradient(fake))
    d_loss, g_loss = self._losses(d_real, d_fake, d(frozen_d, fake))
    sums = {"d_loss": jnp.sum(d_loss * w), "g_loss": jnp.sum(g_loss * w),
            "d_real": jnp.sum(jax.nn.sigmoid(d_real) * w),  # D's probability that x is real
            "d_fake": jnp.sum(jax.nn.sigmoid(d_fake) * w)}
    return jnp.sum((d_loss + g_loss) * w), sums, model_state

  def evaluate(self, variables, batch, rng, compute_dtype=None):
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    labels = self.labels(batch)
    fake, _ = self._generate(params, model_state, rng, labels, False, compute_dtype)
    d = lambda images: apply(self.model, params, {}, images, labels, method="discriminate",  # noqa: E731
                             compute_dtype=compute_dtype)
    d_real, d_fake = d(batch["inputs"]), d(fake)
    d_loss, g_loss = self._losses(d_real, d_fake, d_fake)
    return {"loss": d_loss + g_loss, "d_loss": d_loss, "g_loss": g_loss,
            "d_real": jax.nn.sigmoid(d_real), "d_fake": jax.nn.sigmoid(d_fake)}

  def sample(self, variables, rng, labels_N):
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return self._generate(params, model_state, rng, labels_N, False)[0]
