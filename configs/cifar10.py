"""CIFAR-10 (TFDS catalogue; needs its download): ResNet-18 and the width variants, 32x32 inputs.

  python -m bigmodel_jax.main --config=configs/cifar10.py:resnet18 --workdir=runs/cifar10_resnet18
  python -m bigmodel_jax.main --config=configs/cifar10.py:resnext50 --workdir=runs/cifar10_resnext50
  python -m bigmodel_jax.main --config=configs/cifar10.py:mobilenet --workdir=runs/cifar10_mobilenet
  python -m bigmodel_jax.main --config=configs/cifar10.py:densenet121 --workdir=runs/cifar10_densenet121

All use the CIFAR stems (3x3, stride 1, no max-pool). SGD with Nesterov momentum 0.9, learning
rate 0.1 for batch 128, weight decay 5e-4, cosine over 200 epochs. Training augmentation: the
usual 4-pixel zero padding, random 32x32 crop and horizontal flip (data.augment=crop_flip).
"""

from bigmodel_jax.config import from_variant

VARIANTS = {
    "resnet18": dict(name="resnet", depth=18, stem="cifar"),  # 11,173,962 parameters
    "resnext50": dict(name="resnet", depth=50, stem="cifar", groups=32, width_per_group=4),
    "mobilenet": dict(name="mobilenet", stem_strides=1),
    "densenet121": dict(name="densenet", depth=121, stem="cifar"),
}


def get_config(arg: str = "resnet18"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "cifar10"
  c.data.scale = 1 / 255
  c.data.mean = (0.4914, 0.4822, 0.4465)
  c.data.std = (0.2470, 0.2435, 0.2616)
  c.data.augment = "crop_flip"
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.total_epochs = 200.0
  c.optimizer.name = "nesterov"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.schedule.name = "cosine"
  c.log_every = 100
  c.eval_every = 2000
  c.checkpoint_every = 2000
  return c
