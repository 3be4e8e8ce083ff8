"""Generative models on the 8x8 digits compared in one table: likelihood bounds, sample accuracy,
Frechet distance in a digits classifier's features, parameters, wall time (this CPU).

  python -m bigmodel_jax.main --config=configs/paper/generative.py:ddpm --workdir=runs/paper_generative/ddpm
  python -m bigmodel_jax.sweep --config=configs/paper/generative.py --root=runs/paper_generative
  python -m bigmodel_jax.sweep --config=configs/paper/generative.py:one_seed --root=runs/paper_generative
  python -m bigmodel_jax.report runs/paper_generative --metrics=eval/nelbo,eval/nll_iwae,eval/sample_accuracy,eval/fid_digits,eval/fid_digits_floor

Rows: configs/generative.py's digits variants (vae, conv_vae, cvae, gan, ddpm) with their
settings, 3 seeds each. Negative ELBO and the IWAE bound (k=100) are nats per example of the
17-level pixels (binomial likelihood; VAEs only); sample accuracy is for the class-conditional
rows; eval/fid_digits_floor is the train-vs-test distance, the same for every row.
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.experiments import sweeps

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "generative.py")
ROWS = ("vae", "conv_vae", "cvae", "gan", "ddpm")


def get_config(arg: str = "vae"):
  if arg not in ROWS:
    raise ValueError(f"unknown variant '{arg}'; known: {', '.join(ROWS)}")
  c = load_config_file(f"{BASE}:{arg}")
  c.checkpoint_every = c.total_steps
  c.label = arg  # the row's name in the report
  return c


def get_sweep(arg: str = ""):
  """Every row x 3 seeds; --config=configs/paper/generative.py:ROW sweeps that row only, and
  :one_seed every row with seed 0 (benchmarks/generative.md's table)."""
  if arg == "one_seed":
    return sweeps.product({"arg": list(ROWS), "seed": [0]})
  return sweeps.product({"arg": [arg] if arg else list(ROWS), "seed": [0, 1, 2]})
