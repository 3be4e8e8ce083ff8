"""Sequence to sequence: the addition data set, padding masks, greedy decoding, exact match."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import small_config, train_losses

from bigmodel_jax.data import addition, pipeline, seq2seq
from bigmodel_jax.models.recurrent import RNNSeq2Seq
from bigmodel_jax.models.transformer import EncoderDecoder
from bigmodel_jax.objectives.classify import greedy_decode
from bigmodel_jax.trainer import train


def test_addition_splits_are_disjoint_and_correct():
  pairs = addition.generate()
  assert [len(pairs[s]) for s in ("train", "validation", "test")] == [20_000, 1_000, 2_000]
  assert not set(pairs["train"]) & set(pairs["test"])
  assert not set(pairs["train"]) & set(pairs["validation"])
  src = tfds.data_source("addition", split="test")
  for i in (0, 1, 1999):
    q, a = bytes(src[i]["question"]).decode(), bytes(src[i]["answer"]).decode()
    x, y = q.split("+")
    assert int(x) + int(y) == int(a) and (int(x), int(y)) == pairs["test"][i]


def test_text_pairs_encode_bos_eos_and_weights():
  c = small_config("transformer", "seq2seq").data
  examples = pipeline.load(c).eval
  batch = examples.gather(np.array([0]))
  q = bytes(tfds.data_source("addition", split="test")[0]["question"])
  a = bytes(tfds.data_source("addition", split="test")[0]["answer"])
  np.testing.assert_array_equal(batch["inputs"]["encoder"][0, :len(q)], list(q))
  assert list(batch["label"][0, :len(a) + 1]) == [*a, seq2seq.EOS]
  assert list(batch["inputs"]["decoder"][0, :len(a) + 1]) == [seq2seq.BOS, *a]
  assert batch["weights"][0].sum() == len(a) + 1


def _model_and_variables():
  model = EncoderDecoder(vocab_size=256, max_len=8, dim=32, encoder_depth=1, decoder_depth=1,
                         num_heads=2, mlp_dim=64)
  src = jnp.array([[51, 43, 52, 0, 0, 0, 0], [49, 50, 43, 55, 56, 0, 0]], jnp.int32)
  tgt = jnp.array([[1, 55, 0, 0, 0], [1, 57, 48, 0, 0]], jnp.int32)
  return model, model.init(jax.random.PRNGKey(0), {"encoder": src, "decoder": tgt}), src, tgt


def test_encoder_padding_and_later_decoder_tokens_do_not_change_outputs():
  model, variables, src, tgt = _model_and_variables()
  out = model.apply(variables, {"encoder": src, "decoder": tgt})
  longer = jnp.pad(src, ((0, 0), (0, 1)))  # one more padding position
  np.testing.assert_allclose(model.apply(variables, {"encoder": longer, "decoder": tgt}), out, atol=1e-5)
  changed = tgt.at[:, 3].set(99)  # a later decoder token
  np.testing.assert_allclose(model.apply(variables, {"encoder": src, "decoder": changed})[:, :3],
                             out[:, :3], atol=1e-5)


def test_greedy_decoding_feeds_back_its_own_predictions():
  model, variables, src, tgt = _model_and_variables()
  predicted = greedy_decode(model, variables, {"encoder": src, "decoder": tgt})
  assert predicted.shape == tgt.shape
  # Teacher forcing with the predictions as decoder inputs gives the predictions back.
  forced = jnp.concatenate([tgt[:, :1], predicted[:, :-1]], axis=1)
  logits = model.apply(variables, {"encoder": src, "decoder": forced})
  np.testing.assert_array_equal(jnp.argmax(logits, -1), predicted)


@pytest.mark.parametrize("model", [
    dict(name="encoder_decoder", max_len=8, dim=32, encoder_depth=1, decoder_depth=1, num_heads=2,
         mlp_dim=64),
    dict(name="rnn_seq2seq", embed_dim=16, hidden=32),
], ids=["transformer", "lstm"])
def test_tiny_seq2seq_trains_and_reports_exact_match(tmp_path, model):
  c = small_config("transformer", "seq2seq", total_steps=60, batch_size=64, eval_batch_size=1000,
                   log_every=20, eval_every=60, checkpoint_every=60,
                   **{"schedule.warmup_steps": 10, "optimizer.learning_rate": 3e-3})
  c.model = model
  results = train.train_and_evaluate(c, str(tmp_path))
  losses = train_losses(tmp_path)
  assert losses[-1] < 0.7 * losses[0], losses
  assert 0.0 <= results["eval/exact_match"] <= results["eval/accuracy"] <= 1.0


def test_lstm_encoder_decoder_ignores_input_padding():
  model = RNNSeq2Seq(vocab_size=256, embed_dim=8, hidden=16)
  src = jnp.array([[51, 43, 52, 0, 0], [49, 50, 43, 55, 56]], jnp.int32)
  tgt = jnp.array([[1, 55, 0], [1, 57, 48]], jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), {"encoder": src, "decoder": tgt})
  out = model.apply(variables, {"encoder": src, "decoder": tgt})
  longer = jnp.pad(src, ((0, 0), (0, 3)))
  np.testing.assert_allclose(model.apply(variables, {"encoder": longer, "decoder": tgt}), out, atol=1e-5)
  changed = src.at[0, 0].set(57)  # a real input token does matter
  assert not np.allclose(model.apply(variables, {"encoder": changed, "decoder": tgt})[0], out[0])
