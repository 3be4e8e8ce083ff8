"""Transformers: published parameter counts, masks, rotary positions, training on 8 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_config, train_losses

from bigmodel_jax import train
from bigmodel_jax.models import DecoderLM, TransformerClassifier


def _count(model, x):
  v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  return sum(a.size for a in jax.tree.leaves(nn.unbox(v["params"])))


def test_vit_b16_parameter_count_equals_torchvision():
  vit = TransformerClassifier(1000, patch=(16, 16), dim=768, depth=12, num_heads=12, mlp_dim=3072)
  assert _count(vit, jnp.zeros((1, 224, 224, 3))) == 86_567_656


def test_gpt2_small_parameter_count():
  gpt2 = DecoderLM(50257, max_len=1024, dim=768, depth=12, num_heads=12, mlp_dim=3072)
  assert _count(gpt2, jnp.zeros((1, 8), jnp.int32)) == 124_439_808
  untied = gpt2.clone(tie_embeddings=False)
  assert _count(untied, jnp.zeros((1, 8), jnp.int32)) == 124_439_808 + 50257 * 768


@pytest.fixture(scope="module", params=["learned", "rotary"])
def tiny_lm(request):
  model = DecoderLM(vocab_size=50, max_len=16, dim=32, depth=2, num_heads=4, mlp_dim=64,
                    positions=request.param)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 12), 1, 50)
  return model, model.init(jax.random.PRNGKey(1), tokens), tokens


def test_a_later_token_cannot_change_an_earlier_output(tiny_lm):
  model, variables, tokens = tiny_lm
  logits = model.apply(variables, tokens)
  changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % 50)
  logits2 = model.apply(variables, changed)
  np.testing.assert_allclose(logits[:, :7], logits2[:, :7], atol=1e-6)
  assert not np.allclose(logits[:, 7:], logits2[:, 7:], atol=1e-4)


def test_right_padding_does_not_change_the_unpadded_outputs(tiny_lm):
  model, variables, tokens = tiny_lm
  short = tokens[:, :8]
  padded = jnp.concatenate([short, jnp.zeros((2, 8), short.dtype)], axis=1)
  np.testing.assert_allclose(model.apply(variables, short), model.apply(variables, padded)[:, :8],
                             atol=1e-5)


def test_rotary_attention_depends_on_relative_positions_only():
  from bigmodel_jax.models.transformer import rotary
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 2, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 2, 8))
  dot = lambda i, j: jnp.sum(rotary(q, jnp.array([[i]])) * rotary(k, jnp.array([[j]])), -1)
  np.testing.assert_allclose(dot(3, 1), dot(10, 8), rtol=1e-5)
  assert not np.allclose(dot(3, 1), dot(3, 2))


@pytest.mark.parametrize("file, model", [
    ("mnist1d", dict(name="transformer", patch=(4,), dim=32, depth=2, num_heads=2, mlp_dim=64)),
    ("digits", dict(name="vit", patch=(2, 2), dim=32, depth=2, num_heads=2, mlp_dim=64,
                    pooling="mean")),
])
def test_tiny_transformer_classifiers_train_on_eight_devices(tmp_path, file, model):
  c = small_config("mlp", file, total_epochs=None, total_steps=60, batch_size=64, log_every=10,
                   eval_every=60, checkpoint_every=60, eval_batch_size=200 if file == "digits" else 1000,
                   **{"schedule.name": "constant", "schedule.warmup_steps": 0,
                      "optimizer.learning_rate": 3e-3})
  c.model = model
  results = train.train_and_evaluate(c, str(tmp_path))
  losses = train_losses(tmp_path)
  assert losses[-1] < 0.9 * losses[0], losses
  assert results["eval/accuracy"] > 0.2  # chance is 0.1


@pytest.mark.parametrize("model", [
    dict(name="decoder_lm", max_len=32, dim=32, depth=2, num_heads=2, mlp_dim=64,
         positions="rotary"),
    dict(name="decoder_lm", max_len=32, dim=32, depth=1, num_heads=2, mlp_dim=64,
         tie_embeddings=False),
    dict(name="rnn_lm", embed_dim=16, hidden=32),
], ids=["transformer_rotary", "transformer_untied", "lstm"])
def test_tiny_language_models_train_on_pycode(tmp_path, model):
  c = small_config("transformer", "pycode", total_steps=40, batch_size=32, eval_batch_size=512,
                   log_every=10, eval_every=40, checkpoint_every=40,
                   **{"data.seq_len": 32, "data.eval_split": "test", "schedule.warmup_steps": 5})
  c.model = model
  results = train.train_and_evaluate(c, str(tmp_path))
  losses = train_losses(tmp_path)
  assert losses[-1] < 0.8 * losses[0], losses  # from ~ln(256) = 5.5 nats
  np.testing.assert_allclose(results["eval/bits_per_byte"], results["eval/loss"] / np.log(2))
  assert results["eval/bits_per_byte"] < 6.5  # a uniform guess costs 8 bits


def test_attention_auto_takes_cudnn_only_where_it_applies(monkeypatch):
  from bigmodel_jax.models.transformer import attention_implementation
  q = jnp.zeros((2, 16, 4, 64), jnp.bfloat16)
  assert attention_implementation("auto", q, None) == "xla"  # this CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert attention_implementation("auto", q, None) == "cudnn"
  assert attention_implementation("auto", q.astype(jnp.float32), None) == "xla"
  assert attention_implementation("auto", q, jnp.ones((2, 1, 16, 16), bool)) == "xla"
  assert attention_implementation("auto", jnp.zeros((2, 16, 4, 256), jnp.bfloat16), None) == "xla"
  assert attention_implementation("xla", q, None) == "xla"
  with pytest.raises(ValueError, match="attention 'flash' unknown; known: auto, xla, cudnn"):
    attention_implementation("flash", q, None)
