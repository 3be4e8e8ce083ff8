"""Plain convolutional classifier, 1-D (sequences, B x L x C) or 2-D (images, B x H x W x C).

The rank of the input decides: a B x L sequence gets a channel axis and 1-D convolutions.
Two classic settings are configs (configs/mnist1d.py, configs/digits.py):
  MNIST-1D reference CNN: channels (25, 25, 25), kernels (5, 3, 3), stride 2, padding 1, no pooling.
  Keras/TF tutorial CNN: channels (32, 64, 64), kernel 3, VALID, pool (2, 2, 1), dense (64,).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax

from bigmodel_jax.models.layers import conv, dense


class CNN(nn.Module):
  num_classes: int
  channels: Sequence[int] = (32, 64, 64)
  kernel_sizes: Sequence[int] = (3, 3, 3)  # one per conv layer
  strides: int = 1
  padding: str = "SAME"  # SAME, VALID, or an integer as a string ("1") for symmetric padding
  pool: Sequence[int] = (2, 2, 1)  # max-pool window after each conv layer; 1 = none
  dense: Sequence[int] = (64,)  # hidden dense layers before the head
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if x.ndim == 2:
      x = x[..., None]  # B x L -> B x L x 1
    nd = x.ndim - 2  # spatial dims
    if not len(self.channels) == len(self.kernel_sizes) == len(self.pool):
      raise ValueError("cnn: channels, kernel_sizes and pool need one entry per conv layer")
    padding = [(int(self.padding),) * 2] * nd if self.padding.isdigit() else self.padding
    for i, (ch, k, p) in enumerate(zip(self.channels, self.kernel_sizes, self.pool)):
      x = conv(ch, (k,) * nd, strides=self.strides, padding=padding, name=f"conv_{i}")(x)
      x = nn.relu(x)
      if p > 1:
        x = nn.max_pool(x, (p,) * nd, strides=(p,) * nd)
    x = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.dense):
      x = nn.relu(dense(width, ("embed", "mlp"), name=f"dense_{i}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return dense(self.num_classes, ("mlp", "classes"), name="head")(x)
