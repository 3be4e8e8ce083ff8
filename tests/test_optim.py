"""Optimizers and schedules from config, through Optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigmodel_jax.config import default_config
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.trainer import optim


def _schedule(name, total=100, **kw):
  cfg = default_config().schedule
  cfg.name = name
  cfg.update(kw)
  return optim.make_schedule(cfg, 1.0, total)


def test_schedule_shapes():
  s = _schedule("constant")
  assert float(s(0)) == float(s(99)) == 1.0
  s = _schedule("linear", end_factor=0.1)
  np.testing.assert_allclose([s(0), s(50), s(100)], [1.0, 0.55, 0.1], rtol=1e-6)
  s = _schedule("cosine")
  np.testing.assert_allclose([s(0), s(50), s(100)], [1.0, 0.5, 0.0], atol=1e-6)
  s = _schedule("warmup_cosine", warmup_steps=10)
  np.testing.assert_allclose([s(0), s(5), s(10), s(55), s(100)], [0.0, 0.5, 1.0, 0.5, 0.0],
                             atol=1e-6)
  s = _schedule("step", boundaries=(0.5, 0.75), decay_factor=0.1)
  np.testing.assert_allclose([s(49), s(50), s(74), s(75)], [1.0, 0.1, 0.1, 0.01], rtol=1e-6)
  s = _schedule("rsqrt", warmup_steps=16)
  np.testing.assert_allclose([s(8), s(16), s(16 + 48)], [0.5, 1.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (dict(name="exponential"), "unknown schedule 'exponential'"),
    (dict(name="warmup_cosine", warmup_steps=0), "needs schedule.warmup_steps > 0"),
    (dict(name="cosine", warmup_steps=100), "warmup_steps=100 must be in"),
])
def test_bad_schedules(bad, message):
  with pytest.raises(ConfigError, match=message):
    _schedule(**bad)


@pytest.mark.parametrize("key, value", [("boundaries", (0.5, 1.5)), ("boundaries", (0.75, 0.5)),
                                        ("decay_factor", 0.0), ("end_factor", float("nan"))])
def test_bad_schedule_values_are_refused_before_anything_runs(key, value):
  from bigmodel_jax import config as config_lib
  c = default_config()
  c.model.name, c.data.name = "mlp", "mnist1d"
  c.schedule[key] = value
  with pytest.raises(ConfigError, match=f"^schedule.{key} must be "):
    config_lib.check_values(c)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw", "lamb"])
def test_every_optimizer_minimizes_a_quadratic(name):
  cfg = default_config().optimizer
  cfg.name = name
  tx = optim.make_optimizer(cfg, optax.constant_schedule(0.05))
  params = {"w": jnp.array([[1.0, -2.0], [3.0, 0.5]]), "b": jnp.array([1.0, -1.0])}
  loss = lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))
  opt_state = tx.init(params)
  start = loss(params)
  for _ in range(50):
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    params = optax.apply_updates(params, updates)
  assert loss(params) < 0.5 * start


def test_unknown_optimizer():
  cfg = default_config().optimizer
  cfg.name = "adagrad2"
  with pytest.raises(ConfigError, match="unknown optimizer 'adagrad2'"):
    optim.make_optimizer(cfg, optax.constant_schedule(0.1))


@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb"])
def test_weight_decay_skips_biases_and_norm_scales(name):
  cfg = default_config().optimizer
  cfg.name, cfg.weight_decay = name, 0.5
  tx = optim.make_optimizer(cfg, optax.constant_schedule(0.1))
  params = {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,)), "scale": jnp.ones((3,))}
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  assert float(jnp.abs(updates["kernel"]).sum()) > 0  # decayed
  assert float(jnp.abs(updates["bias"]).sum()) == 0.0
  assert float(jnp.abs(updates["scale"]).sum()) == 0.0


def test_global_norm_clipping():
  cfg = default_config().optimizer
  cfg.name, cfg.grad_clip_norm = "sgd", 1.0
  tx = optim.make_optimizer(cfg, optax.constant_schedule(1.0))
  params = {"a": jnp.zeros(4)}
  updates, _ = tx.update({"a": jnp.full(4, 10.0)}, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)
