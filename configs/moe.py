"""Mixture-of-experts Transformers (models/moe.py) and their dense twins.

  python -m bigmodel_jax.main --config=configs/moe.py:pycode_dense --workdir=runs/moe/pycode_dense
  python -m bigmodel_jax.main --config=configs/moe.py:pycode_moe --workdir=runs/moe/pycode_moe
  python -m bigmodel_jax.main --config=configs/moe.py:pycode_moe --workdir=runs/moe/pycode_moe_ep --config.sharding=fsdp_ep
  python -m bigmodel_jax.main --config=configs/moe.py:vit_moe --workdir=runs/moe/vit_moe
  python -m bigmodel_jax.main --config=configs/moe.py:mixtral_8x7b --dry_run --dry_run_devices=256 --config.sharding=fsdp_ep
  python -m bigmodel_jax.summary --config=configs/moe.py:mixtral_8x7b

Variants (the arg):
- pycode_dense: configs/pycode.py's Transformer (4 blocks of width 128, MLP 512).
- pycode_moe: the same with every block's MLP replaced by 8 experts of half the dense MLP's
  width, each token to its top-2 (GShard), capacity factor 1.25: the dense MLP's FLOPs per token
  times the 1.25 slots' slack (+16% flops_per_example), 2.9x its parameters.
- vit_moe: configs/digits.py's ViT with V-MoE's layout: every other block 8 experts, top-2 (of
  half the dense MLP's width, so the FLOPs per image stay within 15% of the dense ViT's).
- mixtral_tiny: a Mixtral of width 64 (2 blocks, 4 experts, top-2) for conversion tests.
- mixtral_8x7b: Mixtral-8x7B's shapes (32 blocks of width 4096, 32 heads over 8 key/value heads,
  8 SwiGLU experts of 14336, top-2, dropless; rope base 1e6; 46,702,792,704 parameters), for
  planning (--dry_run) and summary only: training it needs a tokenizer and corpus of its size.
"""

import dataclasses
import os

from bigmodel_jax.config import from_variant, load_config_file
from bigmodel_jax.models.moe import MoESpec

CONFIGS = os.path.dirname(os.path.abspath(__file__))

# every MoE option, so that each can be set on the command line (--config.model.expert_dim=256)
_MOE = dataclasses.asdict(MoESpec())
_MIXTRAL = dict(_MOE, name="decoder_lm", positions="rotary", norm="rmsnorm", norm_epsilon=1e-5,
                mlp="swiglu", use_bias=False, tie_embeddings=False, num_experts=8,
                experts_per_token=2, capacity_factor=0.0, router="softmax")
VARIANTS = {
    "mixtral_tiny": dict(_MIXTRAL, dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=128,
                         num_experts=4, max_len=64, rope_base=1e6),
    "mixtral_8x7b": dict(_MIXTRAL, dim=4096, depth=32, num_heads=32, num_kv_heads=8,
                         mlp_dim=14336, rope_base=1e6, max_len=4096, remat="full",
                         scan_layers=True),
}
PYCODE_MOE = dict(_MOE, num_experts=8, experts_per_token=2, expert_dim=256, capacity_factor=1.25)
VIT_MOE = dict(_MOE, num_experts=8, experts_per_token=2, expert_dim=128, capacity_factor=1.25,
               moe_every=2)


def get_config(arg: str = "pycode_moe"):
  if arg in ("pycode_dense", "pycode_moe"):
    c = load_config_file(os.path.join(CONFIGS, "pycode.py:transformer"))
    c.model.update(PYCODE_MOE if arg == "pycode_moe" else _MOE)
  elif arg == "vit_moe":
    c = load_config_file(os.path.join(CONFIGS, "digits.py:vit"))
    c.model.update(VIT_MOE)
  else:
    c = from_variant(VARIANTS, arg)
    c.data.name = "pycode"
    c.data.kind = "lm"
    c.data.input_key = "text"
    c.data.eval_split = "validation"
    c.data.seq_len = 64
    c.batch_size = 8
    c.total_steps = 100
    if arg == "mixtral_8x7b":  # planning settings, as configs/llama.py's
      c.data.seq_len = 4096
      c.data.tokenizer = "bpe:32000"
      c.data.packing = True
      c.batch_size = 256
      c.dtype = "bfloat16"
      c.sharding = "fsdp_ep"
      c.total_steps = 1000
      c.optimizer.name = "adamw"
      c.optimizer.learning_rate = 3e-4
      c.optimizer.weight_decay = 0.1
  c.label = arg
  return c
