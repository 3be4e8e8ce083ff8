"""Multi-task: MNIST, Fashion-MNIST and Kuzushiji-MNIST (28x28 grey, 10 classes each) on one
shared CNN trunk with a head per task, trained on a weighted mixture (TFDS downloads the three
data sets on first use).

  python -m bigmodel_jax.main --config=configs/multitask.py --workdir=runs/multitask_cnn
  python -m bigmodel_jax.main --config=configs/multitask.py:mlp --workdir=runs/multitask_mlp \
      --config.tasks.fashion.weight=2

Each global batch of 192 holds examples of each task in proportion to tasks.NAME.weight (64 each
at equal weights); each task keeps its own shuffled order. The log and results.json give
eval/{task}/accuracy and eval/{task}/loss per task, and eval/accuracy, eval/loss as the mean
over tasks. A task is config.data with overrides: add one with the same input shape as
`c.tasks.NAME = {"weight": 1.0, "name": TFDS_NAME, ...}`.
"""

from bigmodel_jax.config import from_variant

VARIANTS = {  # the trunk; its task_features outputs feed the heads
    "cnn": dict(name="cnn", channels=(32, 64), kernel_sizes=(3, 3), padding="SAME", pool=(2, 2),
                dense=(256,)),
    "mlp": dict(name="mlp", hidden=(512, 256)),
}


def get_config(arg: str = "cnn"):
  c = from_variant(VARIANTS, arg)
  c.data.scale = 1 / 255
  c.data.cache = True
  c.tasks.mnist = {"weight": 1.0, "name": "mnist"}
  c.tasks.fashion = {"weight": 1.0, "name": "fashion_mnist"}
  c.tasks.kmnist = {"weight": 1.0, "name": "kmnist"}
  c.task_features = 128
  c.batch_size = 192
  c.eval_batch_size = 1000
  c.total_steps = 6000
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 200
  c.log_every = 200
  c.eval_every = 2000
  c.checkpoint_every = 2000
  return c
