"""Contrastive image-text training of a dual encoder (models/multimodal.py:DualEncoder).

loss="softmax" is CLIP's (Radford et al. 2021): cross entropy of each image over the batch's
texts and of each text over its images, at a learned temperature (capped at 100). loss="sigmoid"
is SigLIP's (Zhai et al. 2023): every image-text pair of the batch an independent binary
problem, with a learned temperature and bias; per image the sum over the batch's texts.
Captions repeat across images (they name only the digit): a batch's identical texts count as
positives of each other, not negatives (the softmax target is spread over them).

Eval: eval/zero_shot_accuracy (each image's nearest class: the mean embedding of the class's
prompts, one per caption template), and over the whole eval split (at most MAX_RETRIEVAL
pairs) recall@1 and @5 of image-to-text and text-to-image retrieval; a retrieved item is right
when it shows (or names) the query's digit.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigmodel_jax.objectives.base import Objective, apply

LOSSES = ("softmax", "sigmoid")
MAX_SCALE = math.log(100.0)
MAX_RETRIEVAL = 5000


class Contrastive(Objective):
  def __init__(self, model: Any, input_shape: tuple[int, ...], num_classes: int,
               loss: str = "softmax", prompts: Any = None):
    super().__init__(model, input_shape, num_classes)
    if loss not in LOSSES:
      raise ValueError(f"contrastive loss '{loss}' unknown; known: {', '.join(LOSSES)}")
    self.kind = loss
    self.prompts_CxKxT = None if prompts is None else np.asarray(prompts, np.int32)

  def logits(self, image_BxE, text_BxE, scale, bias):
    logits_BxB = jnp.exp(jnp.minimum(scale, MAX_SCALE)) * image_BxE @ text_BxE.T
    return logits_BxB + bias if self.kind == "sigmoid" else logits_BxB

  def loss(self, params, model_state, batch, rng, compute_dtype=None):
    rngs = {"dropout": rng} if rng is not None else {}
    (image_BxE, text_BxE, scale, bias), model_state = apply(
        self.model, params, model_state, batch["inputs"], compute_dtype=compute_dtype,
        train=True, rngs=rngs, mutable=True)
    logits_BxB = self.logits(image_BxE, text_BxE, scale, bias)
    text_BxT = batch["inputs"]["text"]
    same_BxB = jnp.all(text_BxT[:, None] == text_BxT[None], -1)  # identical captions
    if self.kind == "softmax":
      target = same_BxB / jnp.sum(same_BxB, 1, keepdims=True)
      losses_B = (optax.softmax_cross_entropy(logits_BxB, target)
                  + optax.softmax_cross_entropy(logits_BxB.T, target.T)) / 2
    else:
      sign = jnp.where(same_BxB, 1.0, -1.0)
      losses_B = -jnp.sum(jax.nn.log_sigmoid(sign * logits_BxB), 1)
    w = batch["weights"]
    hit = jnp.take_along_axis(same_BxB, jnp.argmax(logits_BxB, 1)[:, None], 1)[:, 0]
    metrics = {"accuracy": jnp.sum(hit * w), "temperature": jnp.sum(jnp.exp(-scale) * w)}
    return jnp.sum(losses_B * w), metrics, model_state

  def class_embeddings(self, variables: Any) -> jax.Array:
    """C x E: each class's prompts embedded, averaged, made unit length."""
    c, k, t = self.prompts_CxKxT.shape
    emb = self.model.apply(variables, jnp.asarray(self.prompts_CxKxT.reshape(c * k, t)),
                           method="encode_text").reshape(c, k, -1).mean(1)
    return emb / jnp.linalg.norm(emb, axis=-1, keepdims=True)

  def evaluate(self, variables, batch, rng, compute_dtype=None):
    del rng
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    image_BxE, text_BxE, _, _ = apply(self.model, params, model_state, batch["inputs"],
                                      compute_dtype=compute_dtype, train=False)
    out = {"collect/image": image_BxE, "collect/text": text_BxE,
           "collect/label": batch["label"]}
    if self.prompts_CxKxT is not None:
      predicted = jnp.argmax(image_BxE @ self.class_embeddings(variables).T, -1)
      out["zero_shot_accuracy"] = (predicted == batch["label"]).astype(jnp.float32)
    return out

  def finish_collected(self, rows: dict[str, np.ndarray]) -> dict[str, float]:
    """Retrieval over the split's first MAX_RETRIEVAL pairs."""
    image, text, label = (rows[f"collect/{k}"][:MAX_RETRIEVAL] for k in ("image", "text", "label"))
    sims = image @ text.T
    out = {}
    for name, s in (("image_to_text", sims), ("text_to_image", sims.T)):
      order = np.argsort(-s, axis=1, kind="stable")
      right = label[order] == label[:, None]
      for k in (1, 5):
        out[f"eval/recall_at_{k}_{name}"] = float(np.mean(np.any(right[:, :k], axis=1)))
    return out
