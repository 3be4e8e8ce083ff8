"""Multi-task classifier: one shared trunk, one linear head per task (config.tasks)."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import dense

# A class another task has but this one lacks: its logit, far below any real one, takes no
# probability and no gradient.
ABSENT = -1e9


class MultiTask(nn.Module):
  """inputs {"x": B x ..., "task": B int32} -> logits B x max(num_classes).

  The trunk (any classifier of the registry, built with `features` outputs) maps x to features;
  a GELU, then head_{name} of the row's task gives its logits, padded with ABSENT to the widest
  task's class count. Every head runs on every row (heads are small); the row's own is kept.
  """

  trunk: nn.Module
  tasks: Sequence[str]
  num_classes: Sequence[int]

  @nn.compact
  def __call__(self, inputs: dict[str, jax.Array], *, train: bool = False) -> jax.Array:
    features_BxF = nn.gelu(self.trunk(inputs["x"], train=train))
    width = max(self.num_classes)
    heads_TxBxC = jnp.stack([
        jnp.pad(dense(n, ("mlp", "classes"), name=f"head_{name}")(features_BxF),
                ((0, 0), (0, width - n)), constant_values=ABSENT)
        for name, n in zip(self.tasks, self.num_classes)])
    task_B = inputs["task"].astype(jnp.int32)
    return jnp.take_along_axis(heads_TxBxC, task_B[None, :, None], axis=0)[0]
