"""Multi-layer perceptron over flattened inputs."""

from collections.abc import Sequence

import flax.linen as nn
import jax

from bigmodel_jax.models.layers import dense


class MLP(nn.Module):
  """Flatten, then `hidden` ReLU layers, then a linear head (MNIST-1D reference: (100, 100))."""

  num_classes: int
  hidden: Sequence[int] = (100, 100)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      x = nn.relu(dense(width, ("embed", "mlp"), name=f"hidden_{i}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(self.num_classes, ("mlp", "classes"), name="head")(x)
