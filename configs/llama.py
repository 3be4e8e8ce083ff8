"""Llama-2-shaped decoder LMs, 7B and 70B, for planning runs past one machine with --dry_run.

  python -m bigmodel_jax.main --config=configs/llama.py:7b --dry_run --dry_run_devices=64 --config.sharding=fsdp
  python -m bigmodel_jax.main --config=configs/llama.py:70b --dry_run --dry_run_devices=256 --config.sharding=fsdp_tp

Variants (the arg): 7b (width 4096, 32 blocks, 32 heads, SwiGLU 11008) and 70b (width 8192, 80
blocks, 64 heads over 8 key/value heads, SwiGLU 28672), both with RMSNorm 1e-5, rotary base
10,000, untied 32,000-token embeddings, 4,096-token windows: Llama 2's shapes (the options that
convert.py reads Hugging Face Llama checkpoints with). Training settings for planning: a global
batch of 256 windows (1M tokens), bfloat16 compute, every block rematerialized and the blocks
scanned (compiled once). Training needs a tokenizer and a corpus of that size: data.tokenizer is
a 32,000-token BPE over pycode here only so that the plan has its shapes (nothing is read).
"""

from bigmodel_jax.config import from_variant

_LLAMA2 = dict(name="decoder_lm", positions="rotary", norm="rmsnorm", norm_epsilon=1e-5,
               mlp="swiglu", use_bias=False, rope_base=10000.0, tie_embeddings=False,
               max_len=4096, remat="full", scan_layers=True)
VARIANTS = {
    "7b": dict(_LLAMA2, dim=4096, depth=32, num_heads=32, num_kv_heads=32, mlp_dim=11008),
    "70b": dict(_LLAMA2, dim=8192, depth=80, num_heads=64, num_kv_heads=8, mlp_dim=28672),
}


def get_config(arg: str = "7b"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "pycode"
  c.data.kind = "lm"
  c.data.input_key = "text"
  c.data.seq_len = 4096
  c.data.tokenizer = "bpe:32000"
  c.data.packing = True
  c.data.eval_split = "validation"
  c.batch_size = 256
  c.eval_batch_size = 256  # pipeline stages cut it into microbatches too
  c.dtype = "bfloat16"
  c.sharding = "fsdp"
  c.total_steps = 1000
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 3e-4
  c.optimizer.b2 = 0.95
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 100
  return c
