"""LSTM/GRU classifiers: parameter counts, directions, pooling, training on 8 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import small_config, train_losses

from bigmodel_jax.models.recurrent import RNNClassifier, RecurrentLayers, _cell
from bigmodel_jax.trainer import train


def _count(model, shape):
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))
  return sum(x.size for x in jax.tree.leaves(nn.unbox(v["params"])))


@pytest.mark.parametrize("d, h", [(1, 64), (40, 128)])
def test_lstm_parameter_count_equals_keras(d, h):
  # keras.layers.LSTM(h) on d features: 4 * (h * (d + h) + h) (one bias per gate, as in flax).
  lstm = 4 * (h * (d + h) + h)
  head = 2 * h * 10 + 10
  model = RNNClassifier(10, cell="lstm", hidden=h, bidirectional=True)
  assert _count(model, (1, 7, d)) == 2 * lstm + head


def test_gru_parameter_count():
  # flax's GRUCell: input kernels with biases for r, z, n; hidden kernels, with a bias on n only.
  d, h = 3, 32
  gru = 3 * (d * h + h) + 3 * h * h + h
  assert _count(RNNClassifier(10, cell="gru", hidden=h, num_layers=1), (1, 5, d)) == gru + h * 10 + 10


def test_directions_read_the_sequence_the_right_way():
  """The forward summary depends on the last step; the backward one sees step 0 last."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 3))
  changed_first = x.at[:, 0].add(1.0)
  forward_only = RNNClassifier(4, cell="gru", hidden=8, pooling="mean")
  v = forward_only.init(jax.random.PRNGKey(1), x)
  both = RNNClassifier(4, cell="gru", hidden=8, bidirectional=True)
  vb = both.init(jax.random.PRNGKey(1), x)
  # A change at step 0 reaches every output (forward) and the backward final state.
  assert not np.allclose(forward_only.apply(v, x), forward_only.apply(v, changed_first))
  assert not np.allclose(both.apply(vb, x), both.apply(vb, changed_first))


def test_the_backward_direction_reads_the_sequence_reversed():
  """Its states are those of a forward cell (same parameters) over the reversed sequence, kept
  in the input's order; its summary is its state after reading step 0, the last it reads."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 3))
  layers = RecurrentLayers("gru", 8, bidirectional=True)
  v = nn.unbox(layers.init(jax.random.PRNGKey(1), x, train=False))
  states, summary = layers.apply(v, x, train=False)
  cell = {"params": {"cell": v["params"]["backward0"]}}
  reversed_states = nn.RNN(_cell("gru", 8, "cell")).apply(cell, x[:, ::-1])
  np.testing.assert_allclose(states[..., 8:], reversed_states[:, ::-1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(summary[:, 8:], reversed_states[:, -1], rtol=1e-5, atol=1e-6)
  forward = nn.RNN(_cell("gru", 8, "cell")).apply({"params": {"cell": v["params"]["forward0"]}}, x)
  np.testing.assert_allclose(summary[:, :8], forward[:, -1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", [
    dict(name="rnn", cell="gru", hidden=16, bidirectional=True),
    dict(name="rnn", cell="lstm", hidden=16, num_layers=2, pooling="mean"),
    dict(name="rnn", cell="lstm", hidden=16, bidirectional=True, pooling="attention"),
], ids=["gru_bi", "lstm_2layer_mean", "lstm_attention"])
def test_tiny_recurrent_classifiers_train_on_eight_devices(tmp_path, model):
  # Digits read as 8 steps of 8 pixels (the image-as-rows path): learnable in a few steps.
  c = small_config("mlp", "digits", total_epochs=None, total_steps=60, batch_size=64,
                   log_every=10, eval_every=60, checkpoint_every=60, eval_batch_size=360,
                   **{"schedule.name": "constant", "schedule.warmup_steps": 0,
                      "optimizer.learning_rate": 1e-2})
  c.model = model
  results = train.train_and_evaluate(c, str(tmp_path))
  losses = train_losses(tmp_path)
  assert losses[-1] < 0.9 * losses[0], losses
  assert np.isfinite(results["eval/loss"])
