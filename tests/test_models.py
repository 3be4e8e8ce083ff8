"""Model registry, shapes, parameter counts against the published architectures, logical axes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from helpers import small_config

from bigmodel_jax import models
from bigmodel_jax.faults import ConfigError


def _abstract_variables(model, shape):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False))


def _count(model, shape):
  return sum(x.size for x in jax.tree.leaves(nn.unbox(_abstract_variables(model, shape))))


@pytest.mark.parametrize("arg, shape, expected", [
    ("cnn", (2, 40), 5_210),  # MNIST-1D paper, reference CNN
    ("mlp", (2, 40), 15_210),  # MNIST-1D paper, reference MLP
])
def test_mnist1d_reference_parameter_counts(arg, shape, expected):
  model = models.build(small_config(arg).model, 10)
  assert _count(model, shape) == expected


def test_keras_tutorial_cnn_parameter_count():
  # TensorFlow's CNN tutorial on CIFAR-10: conv 32-64-64 (3x3, VALID), pools, dense 64, 10 classes.
  model = models.MODELS["cnn"](num_classes=10, channels=(32, 64, 64), kernel_sizes=(3, 3, 3),
                               padding="VALID", pool=(2, 2, 1), dense=(64,))
  assert _count(model, (1, 32, 32, 3)) == 122_570


@pytest.mark.parametrize("arg, file, shape", [
    ("cnn", "mnist1d", (4, 40)), ("mlp", "mnist1d", (4, 40)),
    ("cnn", "digits", (4, 8, 8, 1)), ("mlp", "digits", (4, 8, 8, 1)),
])
def test_logits_shape_and_every_param_has_logical_axes(arg, file, shape):
  model = models.build(small_config(arg, file).model, 10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)
  assert model.apply(variables, jnp.ones(shape)).shape == (shape[0], 10)
  boxed = jax.tree.leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert boxed and all(isinstance(b, nn.LogicallyPartitioned) for b in boxed)
  assert all(len(b.names) == b.value.ndim for b in boxed)


def test_unknown_model_and_unknown_option_are_config_errors():
  c = small_config("cnn")
  c.model.name = "resnet9000"
  with pytest.raises(ConfigError, match="unknown model 'resnet9000'; known: captioner, cnn, decoder_lm, "):
    models.build(c.model, 10)
  c = small_config("mlp")
  c.model.unlock()
  c.model.depth = 3
  with pytest.raises(ConfigError, match="model 'mlp' has no option depth"):
    models.build(c.model, 10)
