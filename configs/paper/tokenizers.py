"""Bytes against a BPE tokenizer on pycode at the same compute: validation bits per byte.

  python -m bigmodel_jax.main --config=configs/paper/tokenizers.py:bpe4096_packed --workdir=runs/tokenizers/bpe4096_packed
  python -m bigmodel_jax.sweep --config=configs/paper/tokenizers.py --root=runs/tokenizers --parallel=2
  python -m bigmodel_jax.report runs/tokenizers --metrics=eval/bits_per_byte,eval/loss

Variants (the arg): bytes (configs/pycode.py's byte-level model, one running text), bytes_packed
(the same with documents packed apart) and bpe4096_packed (a byte-level BPE of 4,096 tokens
trained on the training split, packed). All are the same Transformer (width 128, depth 4,
rotary) on windows of 128 tokens for 600 steps. The BPE model's 4,096-way output layer makes its
step dearer, so the byte models get a larger batch: the same training FLOPs per step (XLA's cost
analysis, `python -m bigmodel_jax.summary`: forward 375.4 MFLOPs per BPE window and 249.3 per
byte window; 32 x 375.4 = 12.01 GFLOPs against 48 x 249.3 = 11.96 per step). Bits per byte count
the bytes of text each token stands for, so the three are comparable.
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.experiments import sweeps

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pycode.py")
VARIANTS = {  # tokenizer, packing, batch size
    "bytes": ("", False, 48),
    "bytes_packed": ("", True, 48),
    "bpe4096_packed": ("bpe:4096", True, 32),
}


def get_config(arg: str = "bpe4096_packed"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant '{arg}'; known: {', '.join(VARIANTS)}")
  c = load_config_file(f"{BASE}:transformer")
  c.data.tokenizer, c.data.packing, c.batch_size = VARIANTS[arg]
  c.total_steps = 600
  c.eval_every = 600
  c.checkpoint_every = 600
  c.log_every = 50
  c.label = arg
  return c


def get_sweep(arg: str = ""):
  return sweeps.product({"arg": [arg] if arg else list(VARIANTS), "seed": [0]})
