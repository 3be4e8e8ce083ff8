"""Recurrent classifiers: stacked, optionally bidirectional LSTM or GRU layers (flax cells run
with nn.RNN, a scan over time), pooled by the last state, the mean, or attention.

Inputs: B x L sequences (one feature per step), B x L x C, or B x H x W x C images read as H steps
of W*C features.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import dense

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}


def _cell(kind: str, features: int, name: str) -> nn.RNNCellBase:
  if kind not in CELLS:
    raise ValueError(f"rnn cell '{kind}' unknown; known: {', '.join(CELLS)}")
  return CELLS[kind](
      features, name=name,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "rnn")),
      recurrent_kernel_init=nn.with_logical_partitioning(nn.initializers.orthogonal(),
                                                         ("rnn_state", "rnn")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("rnn",)))


class RecurrentLayers(nn.Module):
  """B x L x D -> B x L x H (2H if bidirectional), and the summary B x H(2H) of the last states."""

  cell: str = "lstm"
  hidden: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    for i in range(self.num_layers):
      forward = nn.RNN(_cell(self.cell, self.hidden, f"forward{i}"), name=f"rnn{i}")(x_BxLxD)
      last = forward[:, -1]
      if self.bidirectional:
        backward = nn.RNN(_cell(self.cell, self.hidden, f"backward{i}"), reverse=True,
                          keep_order=True, name=f"rnn{i}_reverse")(x_BxLxD)
        forward, last = (jnp.concatenate([forward, backward], -1),
                         jnp.concatenate([last, backward[:, 0]], -1))
      x_BxLxD = nn.Dropout(self.dropout, deterministic=not train)(forward)
    return x_BxLxD, last


class AttentionPool(nn.Module):
  """Additive attention over time (Bahdanau-style scores): B x L x H -> B x H."""

  features: int = 64

  @nn.compact
  def __call__(self, h_BxLxH: jax.Array) -> jax.Array:
    scores = dense(1, ("mlp", "score"), name="score")(
        jnp.tanh(dense(self.features, ("embed", "mlp"), name="project")(h_BxLxH)))
    weights_BxL = jax.nn.softmax(scores[..., 0], axis=-1)
    return jnp.einsum("bl,blh->bh", weights_BxL, h_BxLxH)


class RNNClassifier(nn.Module):
  num_classes: int
  cell: str = "lstm"  # lstm | gru
  hidden: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  pooling: str = "last"  # last (final states) | mean | attention | flatten (every step's states)
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if x.ndim == 2:
      x = x[..., None]
    elif x.ndim == 4:
      x = x.reshape(x.shape[0], x.shape[1], -1)
    h_BxLxH, last = RecurrentLayers(self.cell, self.hidden, self.num_layers, self.bidirectional,
                                    self.dropout, name="layers")(x, train=train)
    if self.pooling == "last":
      pooled = last
    elif self.pooling == "mean":
      pooled = h_BxLxH.mean(axis=1)
    elif self.pooling == "attention":
      pooled = AttentionPool(name="attention")(h_BxLxH)
    elif self.pooling == "flatten":  # the MNIST-1D reference GRU's head
      pooled = h_BxLxH.reshape(h_BxLxH.shape[0], -1)
    else:
      raise ValueError(f"rnn pooling '{self.pooling}' unknown; known: last, mean, attention, "
                       "flatten")
    return dense(self.num_classes, ("embed", "classes"), name="head")(pooled)


class RNNLM(nn.Module):
  """Language model: token embedding, stacked unidirectional LSTM/GRU, a vocabulary head."""

  vocab_size: int
  cell: str = "lstm"
  embed_dim: int = 64
  hidden: int = 256
  num_layers: int = 1
  dropout: float = 0.0

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array, *, train: bool = False) -> jax.Array:
    x = nn.Embed(self.vocab_size, self.embed_dim, name="token_embedding",
                 embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                             ("vocab", "embed")))(tokens_BxL)
    h_BxLxH, _ = RecurrentLayers(self.cell, self.hidden, self.num_layers, False, self.dropout,
                                 name="layers")(x, train=train)
    return dense(self.vocab_size, ("embed", "vocab"), name="lm_head")(h_BxLxH)


class RNNSeq2Seq(nn.Module):
  """Encoder-decoder: an LSTM/GRU reads the input (0 = padding; its state is taken at each
  input's last real token), and that state starts a second one that reads the decoder input."""

  vocab_size: int
  cell: str = "lstm"
  embed_dim: int = 64
  hidden: int = 256

  @nn.compact
  def __call__(self, inputs: dict[str, jax.Array], *, train: bool = False) -> jax.Array:
    embed = nn.Embed(self.vocab_size, self.embed_dim, name="token_embedding",
                     embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                 ("vocab", "embed")))
    src_BxS, tgt_BxT = inputs["encoder"], inputs["decoder"]
    lengths_B = jnp.maximum((src_BxS != 0).sum(axis=1), 1)
    state, _ = nn.RNN(_cell(self.cell, self.hidden, "encoder_cell"), return_carry=True,
                      name="encoder")(embed(src_BxS), seq_lengths=lengths_B)
    h_BxTxH = nn.RNN(_cell(self.cell, self.hidden, "decoder_cell"), name="decoder")(
        embed(tgt_BxT), initial_carry=state)
    return dense(self.vocab_size, ("embed", "vocab"), name="head")(h_BxTxH)
