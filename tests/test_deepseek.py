"""DeepSeek-V3's structures: latent attention and its cache, group-limited sigmoid routing with
the correction bias (state, moved towards equal loads), the first blocks dense, multi-token
prediction, and their bad options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import first_losses, run_main, small_config
from bigmodel_jax.models.layers import AUX
from bigmodel_jax.models.moe import MOE_STATE, MoESpec, balanced_bias, route
from bigmodel_jax.models.transformer import DecoderLM

TINY = dict(vocab_size=50, max_len=16, dim=32, depth=3, mlp_dim=64, positions="rotary",
            norm="rmsnorm", mlp="swiglu", use_bias=False, tie_embeddings=False, num_heads=4,
            kv_lora_rank=8, q_lora_rank=12, qk_nope_head_dim=8, qk_rope_head_dim=4,
            v_head_dim=6, num_experts=8, experts_per_token=2, router="sigmoid",
            router_bias_rate=0.01, n_group=4, topk_group=2, routed_scaling=2.5, first_dense=1,
            shared_experts=1, expert_dim=16, capacity_factor=0.0)


@pytest.mark.parametrize("q_lora_rank", [12, 0])
def test_latent_attention_decodes_the_full_forward_from_a_cache_of_latents(q_lora_rank):
  model = DecoderLM(**{**TINY, "q_lora_rank": q_lora_rank})
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 12), 0, 50)
  variables = model.init(jax.random.PRNGKey(1), tokens)
  assert set(variables["params"]["block1"]["attention"]) == (
      {"q_a", "q_a_norm", "q_b", "kv_a", "kv_a_norm", "kv_b", "out"} if q_lora_rank else
      {"query", "kv_a", "kv_a_norm", "kv_b", "out"})
  full = model.apply(variables, tokens)
  cache = model.init(jax.random.PRNGKey(1), jnp.zeros((2, 16), jnp.int32), decode=True)["cache"]
  logits, state = model.apply({**variables, "cache": cache}, tokens[:, :5], decode=True, start=0,
                              mutable=["cache"])
  outs = [logits]
  for i in range(5, 12):
    logits, state = model.apply({**variables, **state}, tokens[:, i:i + 1], decode=True,
                                start=i, mutable=["cache"])
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)
  # the cache holds each token's latent (kv_lora_rank) and one rotary key, not per-head keys
  shapes = jax.tree.map(lambda a: a.shape, state["cache"]["block0"]["attention"])
  assert shapes == {"cached_latent": (2, 16, 8), "cached_rope_key": (2, 16, 1, 4)}


def test_group_limited_routing_chooses_from_the_best_groups_and_scales_the_weights():
  spec = MoESpec(num_experts=8, experts_per_token=2, router="sigmoid", n_group=4, topk_group=1,
                 routed_scaling=2.5)
  # group 1 (experts 2, 3) has the best pair; expert 7 alone is the best single expert
  logits = jnp.array([[0.0, 0.0, 2.0, 2.0, -1.0, -1.0, 0.0, 3.0]])
  weights, experts, _ = route(spec, logits)
  assert sorted(experts[0].tolist()) == [2, 3]
  np.testing.assert_allclose(weights.sum(), 2.5, rtol=1e-6)
  # topk_group=2: groups 1 and 3 (pair sums 1.76 and 1.45 over 1.0 and 0.54) in view; 7 wins
  wide = MoESpec(**{**spec.__dict__, "topk_group": 2})
  assert sorted(route(wide, logits)[1][0].tolist()) == [2, 7]
  # the correction bias moves the choice but not the weights (the scores of the chosen)
  bias = jnp.zeros(8).at[0].set(10.0)
  weights_b, experts_b, _ = route(wide, logits, bias)
  assert 0 in experts_b[0].tolist()
  scores = jax.nn.sigmoid(logits[0])
  chosen = scores[experts_b[0]]
  np.testing.assert_allclose(weights_b[0], 2.5 * chosen / chosen.sum(), rtol=1e-6)


def test_the_correction_bias_moves_against_the_load():
  experts = jnp.array([[0, 1], [0, 1], [0, 2], [0, 3]])  # expert 0 overloaded, 4..7 idle
  bias = balanced_bias(jnp.zeros(8), experts, 0.001)
  assert float(bias[0]) == pytest.approx(-0.001) and float(bias[1]) == pytest.approx(-0.001)
  assert all(float(b) == pytest.approx(0.001) for b in bias[4:])


def test_first_blocks_dense_and_multi_token_prediction_in_training_only():
  model = DecoderLM(**{**TINY, "mtp_depth": 2})
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 12), 0, 50)
  variables = model.init(jax.random.PRNGKey(1), tokens)
  assert "moe" not in variables["params"]["block0"] and "moe" in variables["params"]["block1"]
  assert set(variables[MOE_STATE]) == {"block1", "block2", "mtp1_block", "mtp2_block"}
  assert AUX not in variables  # nothing sown at init
  _, sown = model.apply(variables, tokens, train=True, mutable=[MOE_STATE, AUX])
  losses = [float(sown[AUX][f"mtp_loss_{k}"][0]) for k in (1, 2)]
  assert all(np.isfinite(loss) and loss > 1.0 for loss in losses)  # untrained: near ln 50
  assert float(sown[AUX]["mtp_aux_loss"][0]) == pytest.approx(0.3 * np.mean(losses), rel=1e-5)
  assert not np.allclose(sown[MOE_STATE]["block1"]["moe"]["correction_bias"], 0)
  # inference ignores the MTP modules: their parameters do not change the logits
  moved = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 1.0 if "mtp" in jax.tree_util.keystr(p) else x, variables["params"])
  np.testing.assert_array_equal(model.apply({**variables, "params": moved}, tokens),
                                model.apply(variables, tokens))


def _tiny_lm(**overrides):
  return small_config("tiny", "deepseek", **{"model.max_len": 32, "data.seq_len": 32,
                                              "batch_size": 8, "schedule.warmup_steps": 2,
                                              **overrides})


def test_a_deepseek_run_trains_its_bias_as_state_and_logs_loads_and_mtp():
  losses, state = first_losses(_tiny_lm(), count=3)
  assert np.all(np.isfinite(losses))
  bias = state.model_state[MOE_STATE]["block1"]["moe"]["correction_bias"]
  assert bias.shape == (8,) and 0 < np.abs(np.asarray(bias)).max() <= 3 * 1e-3 + 1e-9
  assert "correction_bias" not in str(jax.tree_util.tree_structure(state.params))


def test_summary_counts_transformers_deepseek_v3_and_its_latent_cache():
  proc = run_main("--config=configs/deepseek.py:v3", module="bigmodel_jax.summary")
  assert proc.returncode == 0, proc.stderr
  # transformers 5.24.0's DeepseekV3ForCausalLM of the published config.json (MTP off):
  # 671,026,404,352 parameters (its 14,848 correction biases are buffers, ours model state)
  assert "671,026,404,352" in proc.stdout
  # 61 blocks x (the 512 latent + the 64 rotary key) x 2 bytes (bfloat16)
  assert "Decode cache per token: 70,272 bytes" in proc.stdout


@pytest.mark.parametrize("flags,message", [
    (["--config.model.kv_lora_rank=64"], "model.kv_lora_rank=64 must be positive and smaller"),
    (["--config.model.q_lora_rank=-1"], "model.q_lora_rank must be a positive integer"),
    (["--config.model.qk_rope_head_dim=3"], "model.qk_rope_head_dim=3 must be a positive even"),
    (["--config.model.n_group=3"], "model.n_group=3 must divide model.num_experts=8"),
    (["--config.model.topk_group=5"], "model.topk_group=5 must be in 1..4"),
    (["--config.model.topk_group=1", "--config.model.experts_per_token=3"],
     "model.experts_per_token=3 is more than the 2 experts"),
    (["--config.model.mtp_depth=-1"], "model.mtp_depth must be"),
])
def test_bad_deepseek_options_exit_2_with_one_line(tmp_path, flags, message):
  proc = run_main("--config=configs/deepseek.py:tiny", f"--workdir={tmp_path / 'w'}", *flags)
  assert proc.returncode == 2, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], proc.stderr
  assert not (tmp_path / "w").exists()
