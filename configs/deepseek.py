"""DeepSeek-V3's structure (models/transformer.py, models/moe.py): multi-head latent attention,
fine-grained routed experts beside a shared one, sigmoid routing with a correction bias that
balances the load without an auxiliary loss, group-limited choice, the first blocks dense, and
optional multi-token prediction.

  python -m bigmodel_jax.main --config=configs/deepseek.py:pycode --workdir=runs/deepseek/pycode
  python -m bigmodel_jax.summary --config=configs/deepseek.py:v3
  python -m bigmodel_jax.main --config=configs/deepseek.py:v3 --dry_run --dry_run_devices=256

Variants (the arg):
- tiny: width 64, 3 blocks (the first dense), 8 experts of 32 in 4 groups, top-2 of 2 groups,
  MLA with latents of 16 and 24, one MTP module: for tests on this CPU.
- pycode: configs/pycode.py's Transformer (4 blocks of width 128, 4 heads) with MLA (a kv latent
  of 64, a q latent of 96, heads of 32 + 16 rotary features, values of 32) and, after a dense
  first block, 16 experts of 64 (top-4, 1 shared expert of 64; the routed MLP's active width
  is the dense MLP's 512 / 2) routed by sigmoid with the correction bias (rate 1e-3) and no
  Switch loss.
- v3: the published DeepSeek-V3 shapes (61 blocks of width 7168, the first 3 dense of 18432,
  256 routed experts of 2048 in 8 groups, top-8 of 4 groups, 1 shared expert, routed scaling
  2.5, 128 heads, kv latent 512, q latent 1536, 128 + 64 query/key features, values of 128,
  vocabulary 129,280; MTP off), for planning and summary only.
"""

from bigmodel_jax.config import from_variant, load_config_file
import os

CONFIGS = os.path.dirname(os.path.abspath(__file__))

_DEEPSEEK = dict(name="decoder_lm", positions="rotary", norm="rmsnorm", norm_epsilon=1e-6,
                 mlp="swiglu", use_bias=False, tie_embeddings=False, router="sigmoid",
                 capacity_factor=0.0, load_balance_weight=0.0, router_z_weight=0.0,
                 router_bias_rate=1e-3, shared_experts=1, moe_every=1)
VARIANTS = {
    "tiny": dict(_DEEPSEEK, dim=64, depth=3, num_heads=4, mlp_dim=128, max_len=64,
                 num_experts=8, experts_per_token=2, expert_dim=32, n_group=4, topk_group=2,
                 routed_scaling=2.5, first_dense=1, kv_lora_rank=16, q_lora_rank=24,
                 qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, mtp_depth=1),
    "v3": dict(_DEEPSEEK, dim=7168, depth=61, num_heads=128, mlp_dim=18432, max_len=4096,
               num_experts=256, experts_per_token=8, expert_dim=2048, n_group=8, topk_group=4,
               routed_scaling=2.5, first_dense=3, kv_lora_rank=512, q_lora_rank=1536,
               qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, remat="full",
               scan_layers=True),
}
PYCODE = dict(_DEEPSEEK, num_experts=16, experts_per_token=4, expert_dim=64, first_dense=1,
              kv_lora_rank=64, q_lora_rank=96, qk_nope_head_dim=32, qk_rope_head_dim=16,
              v_head_dim=32)


def get_config(arg: str = "pycode"):
  if arg == "pycode":
    c = load_config_file(os.path.join(CONFIGS, "pycode.py:transformer"))
    c.model.update(PYCODE)
  else:
    c = from_variant(VARIANTS, arg)
    c.data.name = "pycode"
    c.data.kind = "lm"
    c.data.input_key = "text"
    c.data.eval_split = "validation"
    c.data.seq_len = 64
    c.batch_size = 8
    c.total_steps = 100
    if arg == "v3":  # planning settings, as configs/llama.py's
      c.data.seq_len = 4096
      c.data.tokenizer = "bpe:129280"
      c.data.packing = True
      c.batch_size = 256
      c.dtype = "bfloat16"
      c.sharding = "fsdp_ep"
      c.total_steps = 1000
      c.optimizer.name = "adamw"
      c.optimizer.learning_rate = 2.2e-4
      c.optimizer.weight_decay = 0.1
  c.label = arg
  return c
