"""Dense vs mixture-of-experts byte-level LMs on pycode at equal FLOPs per token, 3 seeds.

  python -m bigmodel_jax.main --config=configs/paper/moe.py:e8 --workdir=runs/paper_moe/e8
  python -m bigmodel_jax.sweep --config=configs/paper/moe.py --root=runs/paper_moe
  python -m bigmodel_jax.report runs/paper_moe --metrics=eval/bits_per_byte,eval/loss,flops_per_example,num_params

Variants (the arg): dense (configs/moe.py:pycode_dense) and e4 / e8 / e16 (configs/moe.py:
pycode_moe with 4, 8 or 16 experts): every block's MLP a mixture of experts of half the dense
MLP's width, top-2, capacity factor 1.25, so each token meets two half-width experts: the FLOPs
per token of the dense model plus the router and the slots' 25% slack, whatever the number of
experts. All
trained for 400 steps of 32 x 128 bytes (half configs/pycode.py's 800, so that the 12 runs take
about 40 minutes on a 2-core CPU); the sweep runs seeds 0, 1, 2.
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.experiments import sweeps

MOE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "moe.py")
EXPERTS = {"dense": 0, "e4": 4, "e8": 8, "e16": 16}


def get_config(arg: str = "e8"):
  if arg not in EXPERTS:
    raise ValueError(f"unknown variant '{arg}'; known: {', '.join(EXPERTS)}")
  c = load_config_file(f"{MOE}:{'pycode_dense' if arg == 'dense' else 'pycode_moe'}")
  if EXPERTS[arg]:
    c.model.num_experts = EXPERTS[arg]
  c.total_steps = 400
  c.eval_every = c.total_steps
  c.checkpoint_every = c.total_steps
  c.label = arg
  return c


def get_sweep(arg: str = ""):
  return sweeps.product({"arg": [arg] if arg else list(EXPERTS), "seed": [0, 1, 2]})
