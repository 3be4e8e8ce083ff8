"""FLOP counts: every iteration of a scan counted, so that a scanned stack of blocks, a recurrent
net and gradient accumulation count what their unrolled forms count (summary, results.json,
--dry_run)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import small_config

from bigmodel_jax import models
from bigmodel_jax.trainer import flops, planning


def _chain(x, ws):  # one matrix product and tanh per layer, as a Python loop
  for w in ws:
    x = jnp.tanh(x @ w)
  return x.sum()


def _scanned(x, w_stack):  # the same layers scanned
  x, _ = jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, w_stack)
  return x.sum()


X, W = jnp.ones((4, 16)), jnp.ones((6, 16, 16))


def test_a_scan_counts_every_iteration_as_its_unrolled_loop():
  counted = jax.jit(_scanned).lower(X, W).cost_analysis()["flops"]
  every = flops.count(_scanned, X, W)
  assert every == flops.count(_chain, X, list(W))
  assert every > 5 * counted  # XLA alone counts the body once
  assert every >= 6 * 2 * 4 * 16 * 16  # 6 products of 4 x 16 by 16 x 16


def test_nested_and_unrolled_scans_multiply():
  def twice(x, w_stack):  # an outer scan of 3 over an inner scan of 6, unrolled by 4
    def outer(h, _):
      h, _ = jax.lax.scan(lambda g, w: (jnp.tanh(g @ w), None), h, w_stack, unroll=4)
      return h, None
    return jax.lax.scan(outer, x, None, length=3)[0].sum()

  assert flops.count(twice, X, W) == flops.count(_chain, X, list(W) * 3)


def test_gradients_through_a_scan_count_every_iteration():
  scanned = flops.count(jax.grad(_scanned, 1), X, W)
  unrolled = flops.count(jax.grad(lambda x, *ws: _chain(x, ws), argnums=tuple(range(1, 7))),
                         X, *W)
  # the same products; the scan's transpose adds a few element-wise operations per iteration
  # (zeros and sums of its carried cotangents: 6% of this tiny chain's 36k)
  products = (3 * 6 - 1) * 2 * 4 * 16 * 16  # forward, dx (not into x), dw per layer
  assert products < unrolled <= scanned < 1.1 * unrolled


def _decoder(scan: bool):
  c = small_config("transformer", "pycode", **{"data.seq_len": 32})
  c.model.update(depth=4, dim=32, num_heads=2, mlp_dim=64, max_len=32, scan_layers=scan)
  return c


def test_a_scanned_decoder_counts_what_the_unscanned_one_counts():
  counts = []
  for scan in (False, True):
    model = models.build(_decoder(scan).model, 256)
    example = jax.ShapeDtypeStruct((1, 32), np.int32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), example)
    counts.append(flops.per_example(model, variables, example))
  # the same products; the loop adds an index per layer and slices the stacked parameters
  assert counts[1] == pytest.approx(counts[0], rel=1e-4)


def test_a_recurrent_net_counts_every_time_step():
  c = small_config("lstm")  # MNIST-1D: 40 steps of a bidirectional LSTM of 64
  model = models.build(c.model, 10)
  example = jax.ShapeDtypeStruct((1, 40), np.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), example)
  # per step and direction, 4 gates of (input + hidden) x hidden products: 2 x 4 x (1 + 64) x 64
  assert flops.per_example(model, variables, example) > 40 * 2 * 2 * 4 * 65 * 64


def test_the_dry_run_counts_every_layer_and_micro_batch():
  unscanned, scanned = (planning.dry_run(_decoder(scan)) for scan in (False, True))
  # the compiled programs differ a little (the loop's bookkeeping, other fusions): 1%
  assert scanned["flops_per_step_per_device"] == pytest.approx(
      unscanned["flops_per_step_per_device"], rel=0.01)
  c = _decoder(True)
  c.grad_accum_steps = 2  # a scan over 2 micro-batches of half the batch: the same work
  assert planning.dry_run(c)["flops_per_step_per_device"] == pytest.approx(
      scanned["flops_per_step_per_device"], rel=0.01)
