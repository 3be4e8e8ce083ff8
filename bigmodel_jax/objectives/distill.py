"""Knowledge distillation (Hinton et al. 2015): the student of a classification or language-model
objective learns from the labels and from a trained teacher's outputs on the same batch.

  loss = (1 - alpha) CE(labels, student) + alpha T^2 KL(softmax(teacher / T) || softmax(student / T))

per label (per example, or per position of a language model), weighted like the cross entropy.
The teacher is a model and its variables (the trainer loads them from a workdir). They are a
model-state collection ("teacher") created at init (extra_state) and set to the teacher's
values (preset_state): sharded by their logical axis names like the student's, saved in the
student's checkpoints (a resumed run needs no teacher workdir), never differentiated or
updated.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bigmodel_jax import faults
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.objectives.base import Objective, add_aux, apply, apply_with_aux
from bigmodel_jax.objectives.classify import Classify, hits

TEACHER = "teacher"  # the model-state collection holding the teacher's variables


def check_teacher(teacher: nn.Module, student: nn.Module, example: Any) -> None:
  """The teacher reads the student's inputs and gives outputs of the student's shape (shapes
  only: nothing is computed); ConfigError saying which does not hold."""
  def outputs(model: nn.Module) -> Any:
    return jax.eval_shape(lambda x: model.apply(model.init(jax.random.PRNGKey(0), x, train=False),
                                                x, train=False), example)

  shapes = jax.tree.map(lambda x: tuple(x.shape[1:]), example)
  try:
    theirs = outputs(teacher)
  except Exception as e:  # noqa: BLE001 (the teacher's model fails on these inputs)
    raise ConfigError(f"its model cannot read this run's inputs of shape {shapes}: "
                      f"{faults.first_line(e)}") from e
  try:
    ours = outputs(student)
  except Exception:  # noqa: BLE001 (the student's own misfit: reported where its state is made)
    return
  if jax.tree.map(lambda x: x.shape, theirs) != jax.tree.map(lambda x: x.shape, ours):
    raise ConfigError(f"it gives outputs of shape "
                      f"{jax.tree.map(lambda x: tuple(x.shape[1:]), theirs)} per example; the "
                      f"student's are {jax.tree.map(lambda x: tuple(x.shape[1:]), ours)}")


class Distill(Objective):
  def __init__(self, student: Classify, teacher: nn.Module, teacher_variables: Any,
               temperature: float, alpha: float):
    """teacher_variables: {"params", **collections} of the teacher, placed over its collection's
    initial values (preset_state); None when only planning."""
    if student.kind not in ("classification", "lm"):
      raise ConfigError(f"distillation trains classifiers and language models, not '{student.kind}'")
    super().__init__(student.model, student.input_shape, student.num_classes)
    self.student, self.teacher = student, teacher
    self.preset_state = {TEACHER: teacher_variables} if teacher_variables is not None else {}
    self.temperature, self.alpha = float(temperature), float(alpha)

  def weights(self, batch):
    return self.student.weights(batch)

  def extra_state(self, example_inputs: Any) -> dict[str, Any]:
    return {TEACHER: self.teacher.init(jax.random.PRNGKey(0), example_inputs, train=False)}

  def teacher_logits(self, teacher_vars: Any, inputs: Any, compute_dtype: Any) -> jax.Array:
    state = {k: v for k, v in teacher_vars.items() if k != "params"}
    return jax.lax.stop_gradient(apply(self.teacher, teacher_vars["params"], state, inputs,
                                       compute_dtype=compute_dtype, train=False))

  def loss(self, params, model_state, batch, rng, compute_dtype=None):
    own = {k: v for k, v in model_state.items() if k != TEACHER}
    rngs = {"dropout": rng} if rng is not None else {}
    logits, own, aux = apply_with_aux(self.model, params, own, batch["inputs"],
                                      compute_dtype=compute_dtype, train=True, rngs=rngs)
    t = self.temperature
    teacher = self.teacher_logits(model_state[TEACHER], batch["inputs"], compute_dtype)
    p_teacher = jax.nn.softmax(teacher / t)
    kl = t * t * jnp.sum(p_teacher * (jax.nn.log_softmax(teacher / t)
                                      - jax.nn.log_softmax(logits / t)), -1)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    w = batch["weights"]
    sums = {k: jnp.sum(v * w) for k, v in hits(logits, batch["label"]).items()}
    sums.update(kl=jnp.sum(kl * w), cross_entropy=jnp.sum(ce * w))
    loss = (1 - self.alpha) * ce + self.alpha * kl
    return (*add_aux(jnp.sum(loss * w), sums, aux, jnp.sum(w)),
            {**own, TEACHER: model_state[TEACHER]})

  def evaluate(self, variables, batch, rng, compute_dtype=None):
    own = {k: v for k, v in variables.items() if k != TEACHER}
    return self.student.evaluate(own, batch, rng, compute_dtype)

  def finish(self, metrics):
    return self.student.finish(metrics)
