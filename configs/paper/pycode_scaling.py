"""Scaling of a byte-level Transformer LM on pycode: validation loss against parameter count.

  python -m bigmodel_jax.main --config=configs/paper/pycode_scaling.py:d64 --workdir=runs/pycode_scaling/d64
  python -m bigmodel_jax.sweep --config=configs/paper/pycode_scaling.py --root=runs/pycode_scaling
  python -m bigmodel_jax.report runs/pycode_scaling --metrics=eval/loss,eval/bits_per_byte \
      --power_law=num_params:eval/loss

Sizes (the arg) d32 ... d192: width, depth and heads grow together (mlp = 4 x width), every size
trained for the same 600 steps of batch 32 x 128 bytes (2.5M bytes) with configs/pycode.py's
recipe. With a fixed token budget this is the compute-limited regime on this CPU: the fitted
exponent describes these short runs, not converged models.
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.experiments import sweeps

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pycode.py")

SIZES = {  # width, depth, heads
    "d32": (32, 2, 2),
    "d64": (64, 2, 4),
    "d96": (96, 3, 4),
    "d128": (128, 4, 4),
    "d192": (192, 4, 6),
}


def get_config(arg: str = "d64"):
  if arg not in SIZES:
    raise ValueError(f"unknown variant '{arg}'; known: {', '.join(SIZES)}")
  dim, depth, heads = SIZES[arg]
  c = load_config_file(f"{BASE}:transformer")
  c.model.update(dim=dim, depth=depth, num_heads=heads, mlp_dim=4 * dim)
  c.total_steps = 600
  c.eval_every = 600
  c.checkpoint_every = 600
  c.log_every = 50
  c.label = arg
  return c


def get_sweep(arg: str = ""):
  return sweeps.product({"arg": [arg] if arg else list(SIZES), "seed": [0]})
