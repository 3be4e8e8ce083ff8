"""Compression: shrink a model or adapt it cheaply, each through the one trainer.

  config.py     the config sections (quantization, pruning, distill, lora) and their checks
  qwix_wrap.py  quantization-aware training and LoRA: the model wrapped by qwix providers
  prune.py      magnitude pruning (per layer, global, N:M) as an optax wrapper; masks in opt_state
  ptq.py        post-training quantization of a parameter tree (per-channel absmax, int8/int4)

Distillation is an objective (objectives/distill.py); quantizing a trained workdir (and merging
LoRA adapters for export) is inference/quantize.py (python -m bigmodel_jax.quantize).
"""
