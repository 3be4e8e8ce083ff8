"""ResNet, ResNeXt, MobileNet and DenseNet: published parameter counts, BatchNorm, training."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import small_config
from jax.sharding import NamedSharding, PartitionSpec as P

from bigmodel_jax.models.densenet import DenseNet
from bigmodel_jax.models.mobilenet import MobileNet
from bigmodel_jax.models.resnet import ResNet
from bigmodel_jax.trainer import sharding, train


def _params(model, shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))
  return nn.unbox(variables["params"])


def _count(model, shape):
  return sum(x.size for x in jax.tree.leaves(_params(model, shape)))


@pytest.mark.parametrize("model, expected", [
    # torchvision.models, 1,000 classes (the count does not depend on the image size).
    (ResNet(1000, depth=18), 11_689_512),
    (ResNet(1000, depth=34), 21_797_672),
    (ResNet(1000, depth=50), 25_557_032),
    (ResNet(1000, depth=101), 44_549_160),
    (ResNet(1000, depth=152), 60_192_808),
    (ResNet(1000, depth=50, groups=32, width_per_group=4), 25_028_904),  # resnext50_32x4d
    (ResNet(1000, depth=50, width_per_group=128), 68_883_240),  # wide_resnet50_2
    (DenseNet(1000, depth=121), 7_978_856),
    # Keras applications MobileNet (alpha 1.0): trainable parameters.
    (MobileNet(1000), 4_231_976),
], ids=lambda v: getattr(v, "__class__", type(v)).__name__ if not isinstance(v, int) else str(v))
def test_imagenet_parameter_counts_equal_the_references(model, expected):
  assert _count(model, (1, 64, 64, 3)) == expected


def test_cifar_resnet18_parameter_count():
  # The common CIFAR-10 ResNet-18 (3x3 stem, no max-pool; e.g. kuangliu/pytorch-cifar).
  assert _count(ResNet(10, depth=18, stem="cifar"), (1, 32, 32, 3)) == 11_173_962


def test_zero_init_residual_zeroes_each_blocks_last_norm():
  model = ResNet(10, stem="cifar", stage_sizes=(1, 1), widths=(8, 16), bottleneck=False,
                 zero_init_residual=True)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))["params"])
  block = params["stage2_block1"]
  assert float(jnp.abs(block["bn2"]["scale"]).sum()) == 0.0
  assert float(jnp.abs(block["bn1"]["scale"] - 1).sum()) == 0.0


def test_batch_norm_statistics_cover_the_global_batch():
  """The running mean after one training step is the same whether the batch sits on one device or
  is split over 8: the statistics are over the whole global batch, not each device's share."""
  model = ResNet(10, stem="cifar", stage_sizes=(1, 1), widths=(8, 16))
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3)) * 3 + 1
  variables = model.init(jax.random.PRNGKey(0), x[:1])

  def stats(v, x):
    return model.apply(v, x, train=True, mutable=["batch_stats"])[1]["batch_stats"]

  mesh = sharding.Plan("dp", "", {}).mesh
  split = jax.device_put(x, NamedSharding(mesh, P("data")))
  whole = jax.device_put(x, jax.devices()[0])
  a, b = jax.jit(stats)(variables, split), jax.jit(stats)(jax.device_put(variables, jax.devices()[0]), whole)
  for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(u, w, rtol=1e-5, atol=1e-6)
  # ...and differs from the statistics of one device's share alone.
  share = jax.jit(stats)(variables, x[:2])
  assert not np.allclose(jax.tree.leaves(share)[0], jax.tree.leaves(a)[0], atol=1e-4)


# (grouped bottlenecks, ResNeXt's, train in tests/test_images.py's ImageNet-config run)
TINY = {
    "resnet": dict(name="resnet", stem="cifar", stage_sizes=(1, 1), widths=(8, 16), bottleneck=False),
    "mobilenet": dict(name="mobilenet", stem_strides=1, blocks=((16, 1), (32, 2)), width=0.5),
    "densenet": dict(name="densenet", stem="cifar", block_sizes=(2, 2), growth=8, stem_features=16),
}


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_variants_train_on_eight_devices(tmp_path, family):
  c = small_config("cnn", "digits", total_epochs=None, total_steps=4, batch_size=32,
                   eval_batch_size=360, log_every=2, eval_every=4, checkpoint_every=4,
                   **{"schedule.warmup_steps": 1})
  c.model = TINY[family]
  results = train.train_and_evaluate(c, str(tmp_path))
  assert results["step"] == 4 and np.isfinite(results["eval/loss"])
  assert results["num_params"] > 0


@pytest.mark.parametrize("arg, expected", [("resnet18", 11_173_962), ("resnext50", None),
                                           ("mobilenet", None), ("densenet121", None)])
def test_cifar10_configs_build(arg, expected):
  from bigmodel_jax import models
  model = models.build(small_config(arg, "cifar10").model, 10)
  count = _count(model, (1, 32, 32, 3))
  assert count == expected if expected else count > 1_000_000


@pytest.mark.parametrize("arg, expected", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808), ("resnext50", 25_028_904),
    ("densenet121", 7_978_856), ("mobilenet", 4_231_976), ("vit", 86_567_656)])
def test_imagenet2012_configs_are_the_published_architectures(arg, expected):
  from bigmodel_jax import models
  model = models.build(small_config(arg, "imagenet2012").model, 1000)
  # torchvision's counts; Keras's trainable ones for MobileNet
  assert _count(model, (1, 224, 224, 3)) == expected
