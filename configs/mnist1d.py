"""MNIST-1D (4,000 train / 1,000 test sequences of length 40, 10 classes), offline.

  python -m bigmodel_jax.main --config=configs/mnist1d.py:cnn --workdir=runs/mnist1d_cnn
  python -m bigmodel_jax.main --config=configs/mnist1d.py:mlp --workdir=runs/mnist1d_mlp
  python -m bigmodel_jax.main --config=configs/mnist1d.py:gru --workdir=runs/mnist1d_gru
  python -m bigmodel_jax.main --config=configs/mnist1d.py:lstm --workdir=runs/mnist1d_lstm
  python -m bigmodel_jax.main --config=configs/mnist1d.py:lstm_attention --workdir=runs/mnist1d_lstm_attention
  python -m bigmodel_jax.main --config=configs/mnist1d.py:transformer --workdir=runs/mnist1d_transformer
  python -m bigmodel_jax.main --config=configs/mnist1d.py:resnet --workdir=runs/mnist1d_resnet

Variants (the arg): cnn, the reference CNN of the MNIST-1D paper (three stride-2 convolutions of
25 channels, 5,210 parameters); mlp, the reference MLP (two hidden layers of 100, 15,210);
gru, lstm: bidirectional, 64 units, last states; lstm_attention: the same LSTM pooled by
attention; transformer: 4 pre-LN blocks of width 64 over 10 patches of 4; resnet: a 1-D CIFAR-style
ResNet (BasicBlocks, stages of 2 at widths 32-64-128).
Training: batch 100 and 8,000 steps as in the reference, with AdamW (learning rate 1e-2, weight
decay 0.05) and a cosine decay, which holds test accuracy above 90% over seeds; the reference's
constant-rate Adam is `--config.optimizer.name=adam --config.schedule.name=constant`.
"""

from bigmodel_jax.config import from_variant
from bigmodel_jax.experiments import sweeps

VARIANTS = {
    "cnn": dict(name="cnn", channels=(25, 25, 25), kernel_sizes=(5, 3, 3), strides=2,
                padding="1", pool=(1, 1, 1), dense=()),
    "mlp": dict(name="mlp", hidden=(100, 100)),
    "gru": dict(name="rnn", cell="gru", hidden=64, bidirectional=True),
    "lstm": dict(name="rnn", cell="lstm", hidden=64, bidirectional=True),
    "lstm_attention": dict(name="rnn", cell="lstm", hidden=64, bidirectional=True,
                           pooling="attention"),
    "transformer": dict(name="transformer", patch=(4,), dim=64, depth=4, num_heads=4,
                        mlp_dim=256, dropout=0.1),
    "resnet": dict(name="resnet", stem="cifar", stage_sizes=(2, 2, 2), widths=(32, 64, 128),
                   bottleneck=False, zero_init_residual=True),
}


def get_config(arg: str = "cnn"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "mnist1d"
  c.data.input_key = "x"
  c.data.cache = True
  c.batch_size = 100
  c.eval_batch_size = 1000
  c.total_steps = 8000
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-2
  c.optimizer.weight_decay = 0.05
  c.schedule.name = "cosine"
  if c.model.name in ("rnn", "transformer", "resnet"):
    c.total_steps = 2000  # these converge in far fewer steps and cost more per step
  c.log_every = 200
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return c


def get_sweep(arg: str = "cnn"):
  """Learning rate x 3 seeds for the variant:
  python -m bigmodel_jax.sweep --config=configs/mnist1d.py:cnn --root=runs/sweeps/mnist1d_cnn_lr --parallel=2
  python -m bigmodel_jax.report runs/sweeps/mnist1d_cnn_lr
  """
  return sweeps.product({"optimizer.learning_rate": [3e-3, 1e-2, 3e-2], "seed": [0, 1, 2]})
