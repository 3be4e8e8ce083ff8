"""Mixture of experts (models/moe.py) and expert parallelism (sharding presets ep, fsdp_ep)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ONE_DEVICE, first_losses, kill_and_resume, run_main, small_config

from bigmodel_jax.models.layers import AUX, mlp_activation
from bigmodel_jax.models.transformer import DecoderLM
from bigmodel_jax.models.moe import MoE, MoESpec, load_balance_loss, route, slot_indices
from bigmodel_jax.trainer import sharding

D, H, E = 16, 24, 4


def _moe(capacity_factor: float, k: int = 2, mlp: str = "swiglu", router: str = "softmax",
         shared: int = 0, train: bool = False) -> tuple[MoE, dict, jax.Array]:
  spec = MoESpec(num_experts=E, experts_per_token=k, capacity_factor=capacity_factor,
                 router=router, shared_experts=shared)
  module = MoE(spec, H, mlp, use_bias=True, train=train)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 10, D))
  variables = {"params": nn.unbox(module.init(jax.random.PRNGKey(1), x)["params"])}
  # non-zero biases, so that a wrong expert's bias would show
  variables = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(2), v.shape),
                           variables)
  return module, variables, x


def _loop_reference(module: MoE, params: dict, x_BxLxD: jax.Array) -> jax.Array:
  """Each expert applied to every token, its output kept where the router chose it."""
  spec = module.spec
  x_TxD = x_BxLxD.reshape(-1, D)
  weights_TxK, experts_TxK, _ = route(spec, x_TxD @ params["router"])
  out_TxD = jnp.zeros_like(x_TxD)
  for e in range(spec.num_experts):
    up = x_TxD @ params["w_in"][e] + params["b_in"][e]
    gate = (x_TxD @ params["w_gate"][e] + params["b_gate"][e]) if "w_gate" in params else None
    y_TxD = mlp_activation(module.mlp, up, gate) @ params["w_out"][e] + params["b_out"][e]
    weight_T = jnp.sum(jnp.where(experts_TxK == e, weights_TxK, 0.0), -1)
    out_TxD = out_TxD + weight_T[:, None] * y_TxD
  return out_TxD.reshape(x_BxLxD.shape)


@pytest.mark.parametrize("router,mlp,k", [("softmax", "swiglu", 2), ("sigmoid", "gelu", 1)])
def test_dropless_outputs_and_gradients_equal_a_per_expert_loop(router, mlp, k):
  module, variables, x = _moe(0.0, k=k, mlp=mlp, router=router)
  loss = lambda fn: lambda p, x: jnp.sum(jnp.sin(fn(p, x)))
  ours = lambda p, x: module.apply({"params": p}, x)
  ref = lambda p, x: _loop_reference(module, p, x)
  np.testing.assert_allclose(ours(variables["params"], x), ref(variables["params"], x),
                             rtol=1e-5, atol=1e-5)
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(variables["params"], x)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(variables["params"], x)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_capacity_for_every_token_gives_the_dropless_result():
  module, variables, x = _moe(0.0)
  dropless = module.apply(variables, x)
  roomy = MoE(MoESpec(num_experts=E, experts_per_token=2, capacity_factor=E / 2), H, "swiglu",
              use_bias=True)  # C = L: an expert could take every token
  # the same products by other kernels (einsum vs ragged_dot): equal to float32 rounding, not
  # bit for bit (seen: 4.8e-7 at most, a third of the values identical)
  np.testing.assert_allclose(roomy.apply(variables, x), dropless, rtol=1e-6, atol=1e-6)


def test_capacity_one_drops_the_pairs_a_queue_reference_drops():
  rng = np.random.default_rng(0)
  b, k, length, slots = 4, 2, 32, 32 * 2 // E  # capacity factor 1.0
  experts = np.stack([np.stack([rng.permutation(E)[:k] for _ in range(length)], 1)
                      for _ in range(b)])  # B x K x L, distinct experts per token
  experts[0, 0, :] = 0  # one example sends every top-1 choice to expert 0
  got = np.asarray(slot_indices(jnp.asarray(experts), E, slots))
  for i in range(b):
    queue = [0] * E
    for choice in range(k):  # every top-1 choice before any top-2 choice
      for pos in range(length):
        e = experts[i, choice, pos]
        want = e * slots + queue[e] if queue[e] < slots else E * slots
        queue[e] += 1
        assert got[i, choice, pos] == want, (i, choice, pos)
  module, variables, x = _moe(1.0, train=True)
  _, sown = module.apply(variables, x, mutable=[AUX])
  assert 0 < float(sown[AUX]["moe_dropped"][0]) < 1


def test_a_uniform_router_has_load_balancing_loss_one():
  probs = jnp.full((50, E), 1 / E)
  for experts in (jnp.zeros((50, 1), jnp.int32), jnp.arange(100).reshape(50, 2) % E):
    assert float(load_balance_loss(experts, probs)) == pytest.approx(1.0, abs=1e-6)
  module, variables, x = _moe(1.25, train=True, shared=1)
  variables["params"]["router"] = jnp.zeros_like(variables["params"]["router"])
  _, sown = module.apply(variables, x, mutable=[AUX])
  assert float(sown[AUX]["moe_load_balance_loss"][0]) == pytest.approx(1.0, abs=1e-6)
  assert float(sown[AUX]["moe_router_z_loss"][0]) == pytest.approx(np.log(E) ** 2, rel=1e-6)
  shares = [float(sown[AUX][f"moe_expert_share_{e}"][0]) for e in range(E)]
  assert sum(shares) == pytest.approx(1.0)


def test_expert_parallel_capacity_routing_exchanges_tokens_by_all_to_all():
  plan = sharding.Plan("ep", "", {"expert": 4}, None)
  module, variables, _ = _moe(1.25)
  x = jnp.ones((16, 8, D))
  shardings = plan.state_shardings(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x)))
  assert shardings["params"]["w_in"].spec == jax.sharding.PartitionSpec("expert", None, None)

  def forward(v, x):
    return module.clone(layout=plan.layout).apply(v, x)

  hlo = jax.jit(forward, in_shardings=(shardings, plan.batch_sharding)).lower(
      variables, x).compile().as_text()
  assert hlo.count("all-to-all(") >= 2  # to the experts and back
  # with tensor parallelism: each expert's hidden units over tensor, as a dense MLP's
  tp = sharding.Plan("tp", "", {"data": 1, "expert": 2, "tensor": 4}, None)
  spec = tp.state_shardings(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x)))
  assert spec["params"]["w_in"].spec == jax.sharding.PartitionSpec("expert", None, "tensor")


def _lm(**overrides):
  return small_config("pycode_moe", "moe", **{
      "model.dim": 32, "model.depth": 2, "model.num_heads": 2, "model.mlp_dim": 64,
      "model.expert_dim": 32,
      "model.max_len": 32, "data.seq_len": 32, "batch_size": 16, "schedule.warmup_steps": 2,
      **overrides})


def test_fsdp_ep_on_8_devices_gives_the_first_losses_of_dp():
  # dropless; float32, only the order of float reductions differs between the programs
  dp, _ = first_losses(_lm(**{"model.capacity_factor": 0.0}))
  ep, state = first_losses(_lm(**{"model.capacity_factor": 0.0, "sharding": "fsdp_ep"}))
  np.testing.assert_allclose(ep, dp, rtol=1e-4)
  w_in = state.params["block0"]["moe"]["w_in"]
  assert w_in.sharding.spec[0] == "expert"


def test_scanned_moe_blocks_compute_the_unscanned_logits_and_aux_losses():
  options = dict(vocab_size=50, max_len=16, dim=32, depth=2, num_heads=2, mlp_dim=64,
                 num_experts=4, experts_per_token=2)
  loop, scanned = DecoderLM(**options), DecoderLM(**options, scan_layers=True)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (4, 16), 0, 50)
  params = nn.unbox(loop.init(jax.random.PRNGKey(1), tokens))["params"]
  stacked = {k: v for k, v in params.items() if not k.startswith("block")}
  stacked["block"] = jax.tree.map(lambda *xs: jnp.stack(xs), params["block0"], params["block1"])
  outs = [m.apply({"params": p}, tokens, train=True, mutable=[AUX])
          for m, p in ((loop, params), (scanned, stacked))]
  np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
  aux = [jax.tree.leaves(o[1][AUX]) for o in outs]
  np.testing.assert_allclose(np.ravel(np.stack(aux[1])), np.stack(aux[0]).reshape(2, -1).T.ravel(), rtol=1e-5)


def test_a_moe_run_killed_at_random_resumes_bit_identically(tmp_path):
  args = ["--config=configs/moe.py:vit_moe", "--config.total_epochs=1", "--config.eval_every=12",
          "--config.checkpoint_every=6", "--config.log_every=4", "--config.model.depth=2",
          "--config.model.dim=32", "--config.schedule.warmup_steps=2"]
  a, b = kill_and_resume(args, tmp_path, 0.3, env=ONE_DEVICE)
  assert 0 < a["start_step"] < 23
  assert a["params_sha256"] == b["params_sha256"]
  rows = [json.loads(line) for line in (tmp_path / "reference" / "metrics.jsonl").open()]
  train = [r for r in rows if "train/loss" in r]
  assert all(r["train/moe_dropped"] >= 0 and "train/moe_load_balance_loss" in r for r in train)


@pytest.mark.parametrize("flags,message", [
    (["--config.model.experts_per_token=3", "--config.model.num_experts=2"],
     "model.experts_per_token=3 must be in 1..2"),
    (["--config.model.capacity_factor=-1.0"], "model.capacity_factor must be >= 0"),
    (["--config.sharding=ep", "--config.mesh.expert=8", "--config.model.num_experts=4"],
     "model.num_experts=4 does not divide over the mesh's expert axis of 8 devices"),
])
def test_bad_moe_options_exit_2_with_one_line(tmp_path, flags, message):
  proc = run_main("--config=configs/moe.py:pycode_moe", f"--workdir={tmp_path / 'w'}", *flags)
  assert proc.returncode == 2, proc.stderr
  # one line of error (a first run may print that it prepares the data set above it)
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == errors[0]
  assert not (tmp_path / "w").exists()


def test_summary_counts_mixtral_8x7b():
  proc = run_main("--config=configs/moe.py:mixtral_8x7b", module="bigmodel_jax.summary")
  assert proc.returncode == 0, proc.stderr
  assert "46,702,792,704" in proc.stdout
