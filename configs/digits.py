"""The 8x8 handwritten digits that scikit-learn ships (1,437 train / 360 test), offline.

  python -m bigmodel_jax.main --config=configs/digits.py:cnn --workdir=runs/digits_cnn
  python -m bigmodel_jax.main --config=configs/digits.py:mlp --workdir=runs/digits_mlp
  python -m bigmodel_jax.main --config=configs/digits.py:resnet --workdir=runs/digits_resnet
  python -m bigmodel_jax.main --config=configs/digits.py:vit --workdir=runs/digits_vit

Variants (the arg): cnn, the classic Keras/TF tutorial CNN (conv 32-64-64, 3x3, max-pool after
the first two, dense 64, head), with SAME padding for the small images; mlp, two hidden layers;
resnet, a CIFAR-style ResNet (3x3 stem, BasicBlocks, stages of 2 at widths 32-64-128); vit, a
Vision Transformer over 16 patches of 2x2 (4 blocks of width 64).
"""

from bigmodel_jax.config import from_variant

VARIANTS = {
    "cnn": dict(name="cnn", channels=(32, 64, 64), kernel_sizes=(3, 3, 3), padding="SAME",
                pool=(2, 2, 1), dense=(64,)),
    "mlp": dict(name="mlp", hidden=(128, 128)),
    "resnet": dict(name="resnet", stem="cifar", stage_sizes=(2, 2, 2), widths=(32, 64, 128),
                   bottleneck=False, zero_init_residual=True),
    "vit": dict(name="vit", patch=(2, 2), dim=64, depth=4, num_heads=4, mlp_dim=256, dropout=0.1),
}


def get_config(arg: str = "cnn"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "digits"
  c.data.scale = 1 / 16  # pixel values are 0..16
  c.data.cache = True
  c.batch_size = 64
  c.eval_batch_size = 360
  c.total_epochs = 30.0
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 3e-3
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 50
  c.log_every = 50
  c.eval_every = 200
  c.checkpoint_every = 200
  return c
