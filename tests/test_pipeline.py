"""The stage and context mesh axes: pipeline stages (GPipe and circular) and ring attention give
the unsplit model's losses and gradients; a pipelined run resumes under FSDP; bad meshes are
one-line config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models import attention
from bigmodel_jax.models.transformer import DecoderLM
from bigmodel_jax.objectives.classify import Classify
from bigmodel_jax.trainer import build, sharding, train
from helpers import first_losses, run_main, small_config, train_losses

# float32: a pipeline or a ring changes only the order of float reductions (measured ~1e-6)
TOL = 1e-5


def _model(**kw):
  return DecoderLM(vocab_size=64, max_len=32, dim=32, depth=8, num_heads=4, mlp_dim=64,
                   scan_layers=True, positions="rotary", **kw)


def _loss_and_grads(model, params, inputs, plan):
  tokens = inputs["tokens"] if isinstance(inputs, dict) else inputs
  model = model.clone(layout=plan.layout)  # what the plan decides, given to the model

  def loss(p):
    logits = model.apply({"params": p}, inputs, train=True)
    logp = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))

  return jax.jit(jax.value_and_grad(loss))(params)


def _assert_close(got, want):
  (loss, grads), (ref_loss, ref_grads) = got, want
  assert abs(float(loss) - float(ref_loss)) <= TOL * abs(float(ref_loss))
  # relative to the largest gradient (some are zero up to rounding: the key projection's bias)
  scale = max(float(jnp.max(jnp.abs(r))) for r in jax.tree.leaves(ref_grads))
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=0, atol=TOL * scale)


@pytest.fixture(scope="module")
def lm():
  model = _model()
  tokens = jax.random.randint(jax.random.key(1), (16, 32), 0, 64)
  params = jax.tree.map(lambda x: x.value, model.init(jax.random.key(0), tokens)["params"],
                        is_leaf=lambda x: hasattr(x, "value"))
  return model, params, tokens, _loss_and_grads(model, params, tokens,
                                                sharding.Plan("dp", "", {}))


@pytest.mark.parametrize("microbatches, repeats", [(4, 1), (8, 1), (4, 2)])
def test_pipeline_stages_give_the_unpipelined_loss_and_gradients(lm, microbatches, repeats):
  """8 blocks in 4 stages: GPipe with 4 and 8 microbatches, circular with 2 repeats."""
  model, params, tokens, reference = lm
  plan = sharding.Plan("dp", "", {"stage": 4}, None,
                       {"microbatches": microbatches, "repeats": repeats,
                        "schedule": "circular" if repeats > 1 else "gpipe"})
  assert dict(plan.mesh.shape) == {"data": 2, "stage": 4}
  assert plan.schedule.bubble == pytest.approx(3 / (microbatches * repeats + 3))
  # the stacked blocks' state lies over the stages: each device holds a quarter of the layers
  boxed = model.init(jax.random.key(0), tokens)["params"]
  kernel = plan.state_shardings(boxed)["block"]["mlp_in"]["kernel"]
  assert kernel.spec == jax.sharding.PartitionSpec("stage", None, None)
  _assert_close(_loss_and_grads(model, params, tokens, plan), reference)


def test_1f1b_gives_the_unpipelined_loss_and_gradients(lm):
  """The 1F1B schedule owns the backward pass (models/pipeline.one_f_one_b): 8 blocks in 4
  stages, 8 microbatches, each stage keeping 7 microbatches' inputs."""
  model, params, tokens, _ = lm
  batch = {"inputs": tokens[:, :-1], "label": tokens[:, 1:],
           "weights": jnp.ones(tokens[:, 1:].shape, jnp.float32)}

  def loss_and_grads(plan):
    objective = Classify(model.clone(layout=plan.layout), (31,), 64, kind="lm")
    (loss, _), grads = jax.jit(lambda p: objective.loss_and_grads(
        p, {}, batch, jax.random.key(0), None, jnp.sum(batch["weights"])))(params)
    return loss, grads

  plan = sharding.Plan("dp", "", {"stage": 4}, None, {"microbatches": 8, "schedule": "1f1b"})
  assert plan.schedule.ticks == 8 + 2 * 4 - 2
  _assert_close(loss_and_grads(plan), loss_and_grads(sharding.Plan("dp", "", {})))


def test_ring_attention_equals_full_causal_attention_with_segments():
  plan = sharding.Plan("dp", "", {"context": 4})
  b, length, heads, kv_heads, width = 2, 32, 4, 2, 8
  q, k, v, w = (jax.random.normal(key, (b, length, h, width)) for key, h in
                zip(jax.random.split(jax.random.key(0), 4), (heads, kv_heads, kv_heads, heads)))
  segments = jnp.asarray(np.sort(np.random.RandomState(0).randint(0, 3, (b, length)), axis=1))
  order = attention.zigzag(length, 4)
  assert sorted(order[:8]) == [*range(4), *range(28, 32)]  # device 0: the first and last chunk

  def full(q, k, v):
    mask = (segments[:, :, None] == segments[:, None, :])[:, None]
    return jnp.sum(attention.softmax_attention(q, k, v, mask, is_causal=True) * w)

  def ring(q, k, v):
    out = attention.ring_attention(q[:, order], k[:, order], v[:, order], segments[:, order],
                                   plan.layout)
    return jnp.sum(out[:, np.argsort(order)] * w)

  _assert_close(jax.jit(jax.value_and_grad(ring, (0, 1, 2)))(q, k, v),
                jax.value_and_grad(full, (0, 1, 2))(q, k, v))


def test_context_parallel_lm_equals_the_unsplit_one(lm):
  """The rotary LM over 4 devices' zigzag chunks; learned positions (gathered in zigzag order)
  on packed windows, documents kept apart."""
  model, params, tokens, reference = lm
  plan = sharding.Plan("fsdp", "", {"context": 4})  # FSDP over fsdp (2) and context (4) together
  assert plan.spec((8, 32, 64), ("layers", "embed", "mlp")) == jax.sharding.PartitionSpec(
      None, None, ("fsdp", "context"))
  _assert_close(_loss_and_grads(model, params, tokens, plan), reference)
  segments = jnp.asarray(np.sort(np.random.RandomState(1).randint(0, 4, tokens.shape), axis=1))
  starts = jnp.concatenate([jnp.ones_like(segments[:, :1]), jnp.diff(segments, axis=1)], 1)
  positions = jnp.arange(32) - jax.lax.cummax(jnp.where(starts > 0, jnp.arange(32), 0), axis=1)
  packed = {"tokens": tokens, "segment_ids": segments, "positions": positions}
  model = DecoderLM(vocab_size=64, max_len=32, dim=32, depth=2, num_heads=4, mlp_dim=64)
  params = jax.tree.map(lambda x: x.value, model.init(jax.random.key(0), tokens)["params"],
                        is_leaf=lambda x: hasattr(x, "value"))
  _assert_close(_loss_and_grads(model, params, packed, sharding.Plan("dp", "", {"context": 4})),
                _loss_and_grads(model, params, packed, sharding.Plan("dp", "", {})))


def _deep_lm(steps=4, **overrides):
  """The pycode Transformer, narrowed (width 64, windows of 32) with 8 scanned blocks."""
  c = small_config("transformer", "pycode", total_steps=steps, batch_size=16, eval_batch_size=64,
                   log_every=1, eval_every=steps, checkpoint_every=2,
                   **{"schedule.warmup_steps": 1, "data.seq_len": 32,
                      "data.eval_split": "validation[:2]", **overrides})
  c.model.update(max_len=32, dim=64, depth=8, num_heads=8, mlp_dim=128, scan_layers=True)
  return c


def test_a_1f1b_run_gives_the_dp_losses_and_resumes_under_fsdp(tmp_path):
  """Through the trainer (evaluation and checkpoints included): 1F1B over 4 stages and 8
  microbatches trains; its evaluation runs the stages' forward pass as GPipe does. Circular
  stages and context parallelism run the same trainer path; their equality is the model tests'
  above (the CLI runs of each: benchmarks/RESULTS.md)."""
  dp, _ = first_losses(_deep_lm(), count=4, total_steps=4)  # dp's steps, as the trainer's
  got = train.train_and_evaluate(_deep_lm(**{"mesh.stage": 4, "pipeline.microbatches": 8,
                                             "pipeline.schedule": "1f1b"}),
                                 str(tmp_path / "1f1b"))
  np.testing.assert_allclose(train_losses(tmp_path / "1f1b"), dp, rtol=1e-4)
  assert np.isfinite(got["eval/loss"])
  # the pipelined checkpoint (step 4) goes on under fsdp without stages
  resumed = train.train_and_evaluate(
      _deep_lm(steps=6, sharding="fsdp", **{"mesh.stage": 1, "pipeline.microbatches": 8,
                                            "pipeline.schedule": "1f1b"}),
      str(tmp_path / "1f1b"), allow_config_change=True)
  assert resumed["start_step"] == 4 and np.isfinite(resumed["eval/loss"])
  assert len(train_losses(tmp_path / "1f1b")) == 6


@pytest.mark.parametrize("overrides, message", [
    ({"mesh.stage": 4, "model.depth": 6},
     "6 blocks do not split into 4 stages x 1 repeats"),
    ({"mesh.stage": 4, "pipeline.microbatches": 3},
     "pipeline.microbatches=3 does not divide the per-stage batch of 16"),
    ({"mesh.stage": 4, "pipeline.microbatches": 16},
     "microbatches of 1 do not divide over the 2 data-parallel devices of a stage"),
    ({"mesh.stage": 2, "mesh.context": 4}, "together are not supported yet"),
    ({"mesh.stage": 4, "pipeline.repeats": 2}, "the circular schedule takes repeats > 1"),
    ({"mesh.stage": 4, "pipeline.schedule": "1f1b", "model.num_experts": 2},
     "1f1b trains dense blocks"),
    ({"mesh.stage": 4, "model.scan_layers": False},
     "set --config.model.scan_layers=True"),
    ({"mesh.context": 4, "data.seq_len": 20}, "data.seq_len=20 must split into 8 equal chunks"),
])
def test_bad_pipeline_and_context_meshes_are_config_errors(overrides, message):
  c = _deep_lm()
  for key, value in overrides.items():
    node, last = key.split(".")
    c[node][last] = value
  with pytest.raises(ConfigError, match=message):
    build.build(c, jnp.zeros((1, c.data.seq_len), jnp.int32), 256)


def test_a_bad_mesh_exits_2_with_one_line(tmp_path):
  proc = run_main("--config=configs/pycode.py", f"--workdir={tmp_path / 'w'}",
                  "--config.model.scan_layers=True", "--config.mesh.stage=4",
                  "--config.model.depth=6")
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: mesh.stage=4 (batch_size / grad_accum_steps=32): 6 blocks do not split into 4 "
      "stages x 1 repeats: the depth must be a multiple of 4")
  assert not (tmp_path / "w").exists()
