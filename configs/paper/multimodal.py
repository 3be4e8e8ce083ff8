"""Multimodal structures compared in one table (configs/multimodal.py's variants, 3 seeds each):
what each fusion buys on the scene questions, and the dual encoders' zero-shot accuracy and
retrieval on the digits' test images. Parameters and wall time (this CPU) per row.

  python -m bigmodel_jax.main --config=configs/paper/multimodal.py:cross_attention --workdir=runs/paper_multimodal/cross
  python -m bigmodel_jax.main --config=configs/digits.py:cnn --workdir=runs/digits_cnn
  python -m bigmodel_jax.sweep --config=configs/paper/multimodal.py --root=runs/paper_multimodal
  python -m bigmodel_jax.sweep --config=configs/paper/multimodal.py:one_seed --root=runs/paper_multimodal
  python -m bigmodel_jax.report runs/paper_multimodal --metrics=eval/accuracy,eval/zero_shot_accuracy,eval/recall_at_1_image_to_text,eval/recall_at_1_text_to_image,eval/exact_match

The lit rows warm-start their image tower from the classifier workdir runs/digits_cnn (the
second command); another one: --config=configs/paper/multimodal.py:lit_from=DIR (or
one_seed,lit_from=DIR).
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.experiments import sweeps

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "multimodal.py")
ROWS = ("image_only", "text_only", "late_fusion", "gated_fusion", "early_fusion",
        "cross_attention", "bottleneck_fusion", "clip", "siglip", "lit", "captioner")


def get_config(arg: str = "cross_attention"):
  if arg not in ROWS:
    raise ValueError(f"unknown variant '{arg}'; known: {', '.join(ROWS)}")
  c = load_config_file(f"{BASE}:{arg}")
  c.checkpoint_every = c.eval_every = c.total_steps
  c.label = arg  # the row's name in the report
  return c


def get_sweep(arg: str = ""):
  """Every row x 3 seeds (one_seed: seed 0); lit_from=DIR: the lit rows' classifier workdir."""
  options = dict(part.partition("=")[::2] for part in arg.split(",") if part)
  seeds = [0] if "one_seed" in options else [0, 1, 2]
  lit_from = options.get("lit_from", "runs/digits_cnn")
  points = sweeps.product({"arg": [r for r in ROWS if r != "lit"], "seed": seeds})
  return points + sweeps.product({"arg": ["lit"], "seed": seeds, "init_from": [lit_from]})
