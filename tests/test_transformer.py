"""Transformers: published parameter counts, masks, rotary positions, training on 8 devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import small_config, train_losses

from bigmodel_jax.models.transformer import DecoderLM, TransformerClassifier
from bigmodel_jax.trainer import train


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


def test_qk_norm_normalizes_each_heads_queries_and_keys():
  """model.qk_norm (one TransformerConfig field and its use in Attention): a scale per head
  dimension for queries and keys in every block; the attention logits no longer grow with the
  query's scale."""
  from bigmodel_jax import models
  c = small_config("transformer", "pycode")
  c.model.update(dim=32, depth=2, num_heads=4, mlp_dim=64, max_len=16)
  tokens = jnp.zeros((1, 8), jnp.int32)
  plain = models.build(c.model, 256)
  c.model.qk_norm = True
  normed = models.build(c.model, 256)
  assert _count(normed, tokens) == _count(plain, tokens) + 2 * 2 * (32 // 4)
  variables = normed.init(jax.random.PRNGKey(0), tokens)
  scaled = jax.tree_util.tree_map_with_path(  # the query projection 10x larger: same output
      lambda path, x: x * 10 if "query" in jax.tree_util.keystr(path) and "norm" not in
      jax.tree_util.keystr(path) else x, variables)
  np.testing.assert_allclose(normed.apply(scaled, tokens), normed.apply(variables, tokens),
                             rtol=1e-4, atol=1e-4)


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
  from bigmodel_jax.models.attention import attention_implementation
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


@pytest.mark.parametrize("causal, masked, kv_heads, queries, dtype, blocks", [
    (True, False, 4, 16, jnp.float32, None),  # the decoder's self-attention (one block at 16)
    (True, False, 4, 16, jnp.float32, 3),     # ... in 3 query blocks of 5, 5, 6 (keys skipped)
    (True, False, 4, 16, jnp.float32, 16),    # ... one query per block
    (False, True, 4, 16, jnp.float32, None),  # padding mask
    (True, True, 2, 16, jnp.float32, 4),      # grouped-query attention, both masks, 4 blocks
    (True, "keys", 4, 16, jnp.float32, 3),    # a B x 1 x 1 x S key-padding mask, broadcast
    (False, True, 4, 8, jnp.float32, None),   # cross-attention: 8 queries over 16 keys
    (True, False, 1, 16, jnp.bfloat16, 2),    # mixed precision, one key/value head
])
def test_softmax_attention_computes_what_jax_dot_product_attention_does(causal, masked, kv_heads,
                                                                        queries, dtype, blocks):
  from bigmodel_jax.models.attention import softmax_attention
  kq, kk, kv, km, kg = jax.random.split(jax.random.PRNGKey(1), 5)
  q = jax.random.normal(kq, (2, queries, 4, 8), dtype)
  k, v = (jax.random.normal(key, (2, 16, kv_heads, 8), dtype) for key in (kk, kv))
  rows = 1 if masked == "keys" else queries
  mask = jax.random.bernoulli(km, 0.7, (2, 1, rows, 16)).at[..., 0].set(True) if masked else None
  g = jax.random.normal(kg, (2, queries, 4, 8), jnp.float32)

  def loss(f):
    return lambda q, k, v: (f(q, k, v).astype(jnp.float32) * g).sum()

  ours = lambda q, k, v: softmax_attention(q, k, v, mask, causal, blocks)
  ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                                     implementation="xla")
  tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
  # values and gradients in one compile per side (not one per operation, eagerly)
  both = lambda f: jax.jit(lambda *qkv: (f(*qkv), jax.grad(loss(f), (0, 1, 2))(*qkv)))(q, k, v)
  (out, grads), (ref_out, ref_grads) = both(ours), both(ref)
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out, np.float32),
                             atol=tol, rtol=tol)
  for a, b in zip(grads, ref_grads):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               atol=5 * tol, rtol=5 * tol)


def test_causal_attention_is_cut_into_query_blocks_of_at_least_32():
  from bigmodel_jax.models.attention import causal_query_blocks, softmax_attention
  assert [causal_query_blocks(n) for n in (16, 63, 64, 128, 256, 4096)] == [1, 1, 2, 4, 8, 8]
  q = jnp.zeros((1, 8, 2, 4))
  for bad in (0, 9):
    with pytest.raises(ValueError, match=f"query_blocks={bad}"):
      softmax_attention(q, q, q, is_causal=True, query_blocks=bad)


@pytest.mark.parametrize("lhs_shape, rhs_shape, dims", [
    ((2, 3, 5), (5, 7), (((2,), (0,)), ((), ()))),            # Dense over B x L x D
    ((2, 3, 4, 5), (4, 5, 6), (((2, 3), (0, 1)), ((), ()))),  # attention's output projection
    ((2, 3, 5), (5, 4, 6), (((2,), (0,)), ((), ()))),          # query/key/value projections
    ((3, 5), (5, 7), (((1,), (0,)), ((), ()))),                # already a matrix: unchanged
    ((2, 3, 5), (2, 5, 7), (((2,), (1,)), ((0,), (0,)))),      # batch dimensions: unchanged
    ((5, 3), (5, 7), (((0,), (0,)), ((), ()))),                # contracting a leading axis
])
def test_token_dot_general_is_dot_general_with_the_tokens_merged(lhs_shape, rhs_shape, dims):
  from bigmodel_jax.models.layers import token_dot_general
  a = jax.random.normal(jax.random.PRNGKey(0), lhs_shape)
  b = jax.random.normal(jax.random.PRNGKey(1), rhs_shape)
  want = jax.lax.dot_general(a, b, dims)
  got = token_dot_general(a, b, dims)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  grads = [jax.grad(lambda a, b: (f(a, b, dims) * want).sum(), (0, 1))(a, b)
           for f in (token_dot_general, jax.lax.dot_general)]
  for g1, g2 in zip(*grads):
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-5)
