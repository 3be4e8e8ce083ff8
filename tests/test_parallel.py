"""Parallelism as configuration: dp, fsdp, tp, fsdp_tp and pmap give the same losses; FSDP
splits the state; gradient accumulation, mixed precision, remat and scanned layers."""

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from bigmodel_jax import models
from bigmodel_jax.models.transformer import REMAT_POLICIES
from bigmodel_jax.objectives.classify import Classify
from bigmodel_jax.trainer import optim, sharding, steps, train
from bigmodel_jax.trainer import state as state_lib
from helpers import small_config, train_losses

# float32, 4 steps of AdamW: the strategies differ only in the order of float reductions. Adam
# divides by sqrt(v), which magnifies a difference in the last bits of a small gradient, so the
# bound is on losses (not parameters): measured differences are ~1e-6 relative.
LOSS_RTOL = 2e-5


def _lm(steps=4, **overrides):
  """The pycode Transformer config, shrunk: 2 blocks of width 64, 8 heads, windows of 32."""
  c = small_config("transformer", "pycode", total_steps=steps, batch_size=16, eval_batch_size=64,
                   log_every=1, eval_every=steps, checkpoint_every=steps,
                   **{"schedule.warmup_steps": 1, "data.seq_len": 32,
                      "data.eval_split": "validation[:2]"})
  c.model.update(max_len=32, dim=64, depth=2, num_heads=8, mlp_dim=128)
  for key, value in overrides.items():
    node, *path = key.split(".")
    (c[node] if path else c).__setattr__(path[0] if path else node, value)
  return c


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
  """The reference: _lm() with the default dp preset, float32. (results, train losses)"""
  workdir = tmp_path_factory.mktemp("dp")
  return train.train_and_evaluate(_lm(), str(workdir)), train_losses(workdir)


def test_every_strategy_gives_the_same_losses(tmp_path, dp_run):
  """fsdp_tp applies both the fsdp and the tp rules (their layouts alone: the state tests
  below); pmap is the other execution path."""
  runs = {"fsdp_tp": {"sharding": "fsdp_tp"}, "pmap": {"parallel.strategy": "pmap"}}
  losses = {"dp": dp_run[1]}
  for name, overrides in runs.items():
    results = train.train_and_evaluate(_lm(**overrides), str(tmp_path / name))
    losses[name] = train_losses(tmp_path / name)
    assert len(losses[name]) == 4 and np.isfinite(results["eval/loss"])
  for name, got in losses.items():
    np.testing.assert_allclose(got, losses["dp"], rtol=LOSS_RTOL, err_msg=name)


def _state(preset, **mesh):
  c = _lm()
  c.model.update(dim=256, mlp_dim=1024)
  plan = sharding.Plan(preset, "", mesh)
  model = models.build(c.model, 256)
  tx = optim.make_optimizer(c.optimizer, optim.make_schedule(c.schedule, 1e-3, 10))
  state, _ = state_lib.create(model, tx, jnp.zeros((1, 32), jnp.int32), 0, plan)
  return plan, state, model, tx


def _device0_bytes(tree):
  """Bytes that device 0 really holds: the data of each array's shard there."""
  device = jax.devices()[0]
  return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
             if s.device == device)


def test_fsdp_holds_an_eighth_of_the_state_per_device():
  _, replicated, _, _ = _state("dp")
  plan, split, _, _ = _state("fsdp")
  assert dict(plan.mesh.shape) == {"fsdp": 8}  # the preset's own mesh
  full = _device0_bytes((replicated.params, replicated.opt_state))
  assert full == sum(x.nbytes for x in jax.tree.leaves((replicated.params, replicated.opt_state)))
  ratio = _device0_bytes((split.params, split.opt_state)) / full
  assert 1 / 8 <= ratio < 1 / 8 * 1.05, ratio  # biases and norms (< 1024 values) stay whole
  assert sharding.per_device_bytes((split.params, split.opt_state)) == _device0_bytes(
      (split.params, split.opt_state))


def test_tp_splits_mlp_and_heads_over_tensor():
  plan, state, _, _ = _state("tp")
  assert dict(plan.mesh.shape) == {"data": 1, "tensor": 8}
  block = state.params["block0"]
  assert block["mlp_in"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, "tensor")
  assert block["mlp_out"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("tensor", None)
  assert block["attention"]["query"]["kernel"].sharding.spec[1] == "tensor"


@pytest.mark.parametrize("mesh, preset, expected", [
    ({}, "dp", {"data": 8}),
    ({}, "fsdp_tp", {"fsdp": 2, "tensor": 4}),
    ({"data": 2}, "fsdp", {"data": 2, "fsdp": 4}),
    ({"tensor": 2}, "tp", {"data": 4, "tensor": 2}),
    ({"data": -1, "tensor": 2}, "fsdp", {"data": 4, "tensor": 2}),
])
def test_presets_build_their_mesh_unless_sizes_are_given(mesh, preset, expected):
  assert dict(sharding.Plan(preset, "", mesh).mesh.shape) == expected


def test_explicit_rules_override_the_preset():
  plan = sharding.Plan("dp", "mlp=data", {})
  assert plan.spec((64, 128), ("embed", "mlp")) == jax.sharding.PartitionSpec(None, "data")
  assert plan.spec((64, 10), ("embed", "mlp")) == jax.sharding.PartitionSpec(None, None)  # 10 % 8


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
  one = train.train_and_evaluate(_lm(steps=3, batch_size=32), str(tmp_path / "one"))
  four = train.train_and_evaluate(_lm(steps=3, batch_size=32, grad_accum_steps=4),
                                  str(tmp_path / "four"))
  np.testing.assert_allclose(train_losses(tmp_path / "four"), train_losses(tmp_path / "one"),
                             rtol=LOSS_RTOL)
  assert abs(four["eval/loss"] - one["eval/loss"]) < 1e-4


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_state(tmp_path, dp_run):
  _, state, model, tx = _state("dp")
  tokens = jax.random.randint(jax.random.PRNGKey(0), (8, 32), 0, 256)
  batch = {"inputs": tokens, "label": jnp.roll(tokens, -1, axis=1)}
  objective = Classify(model, (32,), 256, kind="lm")
  step = lambda dtype: functools.partial(steps.train_step, objective=objective, tx=tx,  # noqa: E731
                                         schedule=lambda s: 1e-3, compute_dtype=dtype)
  jaxpr = str(jax.make_jaxpr(step(jnp.bfloat16))(state, batch))
  assert "dot_general" in jaxpr and "bf16" in jaxpr
  new16, m16 = jax.jit(step(jnp.bfloat16))(state, batch)
  new32, m32 = jax.jit(step(None))(state, batch)
  assert {x.dtype for x in jax.tree.leaves((new16.params, new16.opt_state))} <= {
      np.dtype("float32"), np.dtype("int32")}
  assert m16["loss"].dtype == np.float32
  assert m16["loss"] != m32["loss"] and abs(m16["loss"] - m32["loss"]) / m32["loss"] < 2e-2
  bf16 = train.train_and_evaluate(_lm(dtype="bfloat16"), str(tmp_path / "bf16"))
  assert abs(bf16["eval/loss"] - dp_run[0]["eval/loss"]) < 0.05  # the same run in float32


def _loss_and_grads(model_config, params=None):
  model = models.build(model_config, 256)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 32), 0, 256)
  if params is None:
    params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  params = jax.tree.map(lambda x: getattr(x, "value", x), params,
                        is_leaf=lambda x: hasattr(x, "value"))

  def loss(p):
    logits = model.apply({"params": p}, tokens)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

  return params, jax.jit(jax.value_and_grad(loss))(params)


def _rematerialized(model_config, params) -> list:
  """The policy of every rematerialized region in the gradient's program (None: no remat)."""
  model = models.build(model_config, 256)
  tokens = jnp.zeros((4, 32), jnp.int32)
  grad = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, tokens)))
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if "policy" in eqn.params and "prevent_cse" in eqn.params:
        found.append(eqn.params["policy"])
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jax.make_jaxpr(grad)(params).jaxpr)
  return found


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_gives_the_same_loss_and_gradients(policy):
  cfg = _lm().model
  params, (loss, grads) = _loss_and_grads(cfg)
  assert _rematerialized(cfg, params) == []
  cfg.remat = policy
  # Each block is a rematerialized region with the policy's rule of what to keep.
  regions = _rematerialized(cfg, params)
  assert regions == [REMAT_POLICIES[policy]] * cfg.depth, regions
  _, (loss_r, grads_r) = _loss_and_grads(cfg, params)
  assert float(loss_r) == pytest.approx(float(loss), rel=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, grads_r)


def test_scanned_layers_give_the_same_loss_as_the_loop():
  cfg = _lm().model
  params, (loss, _) = _loss_and_grads(cfg)
  stacked = {k: v for k, v in params.items() if not k.startswith("block")}
  stacked["block"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                  *[params[f"block{i}"] for i in range(cfg.depth)])
  cfg.scan_layers = True
  _, (loss_s, _) = _loss_and_grads(cfg, stacked)
  assert float(loss_s) == pytest.approx(float(loss), rel=1e-5)
  cfg.remat = "full"  # scan and remat together
  _, (loss_sr, _) = _loss_and_grads(cfg, stacked)
  assert float(loss_sr) == pytest.approx(float(loss), rel=1e-5)


def test_a_step_compiles_what_its_layout_says_with_no_context_to_enter():
  """The layout is the model's own (models/layout.py): the same train step traced under two
  plans in one process gives two programs, each with its own activation shardings, and a
  model built for one device has none. (With the layout in context variables, a step traced
  once outside the `with` kept that program: jit does not key its cache on them.)"""
  from bigmodel_jax.trainer import build as build_lib
  from bigmodel_jax.data import pipeline
  c = _lm()
  sources = pipeline.load(c.data)
  programs = {}
  for preset in ("dp", "tp", "none"):
    cfg = _lm(sharding="dp" if preset == "none" else preset)
    built = build_lib.build(cfg, build_lib.example_of(sources.train), sources.num_outputs, 4)
    if preset == "none":
      built.objective.model = built.one_device_model
    state = built.planned_state()
    batch = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((cfg.batch_size, *x.shape[1:]), x.dtype,
                                       sharding=built.plan.batch_sharding),
        sources.train.gather(np.arange(cfg.batch_size)))
    step = steps.jit_train_step(built.plan, jax.tree.map(lambda x: x.sharding, state),
                                **built.step_options)
    programs[preset] = step.trace(state, batch).lower().as_text()
  constraints = {k: p.count("sharding_constraint") + p.count("@Sharding") for k, p in
                 programs.items()}
  assert constraints["none"] == 0 and constraints["dp"] > 0 and constraints["tp"] > 0
  assert programs["dp"] != programs["tp"]
  assert '"tensor"' in programs["tp"] and '"tensor"' not in programs["dp"]
