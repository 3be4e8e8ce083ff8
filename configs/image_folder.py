"""Your own images in the ImageNet / torchvision layout (DIR/train/CLASS/*.JPEG, DIR/val/CLASS/...;
JPEG and PNG): ResNet-18, ResNet-50 or ViT-B/16 at 224x224, ImageNet's recipe (configs/
imagenet2012.py) at batch 256. The folder is prepared once into array_record beside your other
TFDS data (the files' bytes, not re-encoded); training decodes with Grain worker processes, one
per core (--config.data.workers=N), and normalizes on the device.

  python -m bigmodel_jax.main --config=configs/image_folder.py:resnet50 --config.data.path=DIR --workdir=runs/folder_resnet50
  python -m bigmodel_jax.main --config=configs/image_folder.py:resnet18 --config.data.path=DIR --workdir=runs/folder_resnet18
  python -m bigmodel_jax.main --config=configs/image_folder.py:vit --config.data.path=DIR --workdir=runs/folder_vit

Try it without data: `python -m bigmodel_jax.data.jpeg_folder /tmp/jpegs` writes 2,000 synthetic
JPEGs in 10 classes. `python -m bigmodel_jax.data.image_folder DIR` prepares a folder now (every
image decoded once: a file that is not a readable JPEG or PNG is named, exit 2), as the first
run on it would. How fast the input runs alone, per worker count:

  python -m bigmodel_jax.data.throughput --config=configs/image_folder.py:resnet50 --config.data.path=DIR

Warm-up is 500 steps (5 epochs of a 25k-image folder); set schedule.warmup_steps for yours, and
scale learning_rate with batch_size.
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.faults import ConfigError

VARIANTS = ("resnet18", "resnet50", "vit")


def get_config(arg: str = "resnet50"):
  if arg not in VARIANTS:
    raise ConfigError(f"unknown variant '{arg}'; known: {', '.join(VARIANTS)}")
  here = os.path.dirname(os.path.abspath(__file__))
  c = load_config_file(f"{os.path.join(here, 'imagenet2012.py')}:{arg}")
  c.data.name = "image_folder"
  c.data.eval_split = "val"
  c.batch_size = c.eval_batch_size = 256
  c.optimizer.learning_rate = 1e-3 if arg == "vit" else 0.1
  c.schedule.warmup_steps = 500
  c.eval_every = 1000
  c.checkpoint_every = 1000
  return c
