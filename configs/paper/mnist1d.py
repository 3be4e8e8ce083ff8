"""The MNIST-1D benchmark table (Greydanus & Kobak, 2020/2024), reproduced on this CPU.

  python -m bigmodel_jax.main --config=configs/paper/mnist1d.py:cnn --workdir=runs/paper_mnist1d/cnn
  python -m bigmodel_jax.sweep --config=configs/paper/mnist1d.py --root=runs/paper_mnist1d --parallel=2
  python -m bigmodel_jax.report runs/paper_mnist1d --metrics=eval/accuracy

Rows of the reference implementation with its settings: Adam at a constant learning rate of
1e-2, batch 100, 8,000 steps; logistic regression; an MLP of two hidden layers of 256; the CNN
of three stride-2 convolutions of 25 channels (kernels 5, 3, 3) and a linear head; a small
bidirectional GRU (6 units) whose head reads every step's states. Rows for this codebase's
ResNet, LSTM and Transformer use their configs/mnist1d.py recipes (AdamW + cosine, 2,000 steps).
The sweep runs every row with 3 seeds. Published test accuracies (paper, Table 1): logistic
regression 32%, MLP 68%, CNN 94%, GRU 91%.
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.experiments import sweeps

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mnist1d.py")

REFERENCE = {  # model overrides on configs/mnist1d.py's variants
    "logistic": ("mlp", dict(hidden=())),
    "mlp": ("mlp", dict(hidden=(256, 256))),
    "cnn": ("cnn", {}),
    "gru": ("gru", dict(hidden=6, pooling="flatten")),
}
OURS = ("resnet", "lstm", "transformer")
ROWS = (*REFERENCE, *OURS)


def get_config(arg: str = "cnn"):
  if arg not in ROWS:
    raise ValueError(f"unknown variant '{arg}'; known: {', '.join(ROWS)}")
  if arg in OURS:
    c = load_config_file(f"{BASE}:{arg}")
  else:
    variant, model = REFERENCE[arg]
    c = load_config_file(f"{BASE}:{variant}")
    c.model.update(model)
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-2
    c.optimizer.weight_decay = 0.0
    c.schedule.name = "constant"
    c.batch_size = 100
    c.total_steps = 8000
    c.eval_every = 1000
    c.log_every = 250
  c.checkpoint_every = c.total_steps  # short runs: one checkpoint at the end
  c.label = arg  # the row's name in the report
  return c


def get_sweep(arg: str = ""):
  """Every row x 3 seeds ("arg" picks the row: the part after the colon of --config);
  --config=configs/paper/mnist1d.py:ROW sweeps that row only."""
  return sweeps.product({"arg": [arg] if arg else list(ROWS), "seed": [0, 1, 2]})
