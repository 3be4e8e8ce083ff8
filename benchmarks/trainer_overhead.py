"""The trainer's steps/s against a minimal hand-written loop, side by side in one process.

  .venv/bin/python benchmarks/trainer_overhead.py [--configs=configs/mnist1d.py:cnn,...]
      [--steps=2000] [--rounds=3]

Both sides train the same model with the same optimizer, schedule, dtype and batch size. The
minimal loop is what a researcher writes by hand: the batches already on the device (taken from
the same training split once), one jitted, state-donating update per batch (loss, gradients,
optax), nothing else. The trainer is `train.train_and_evaluate` as a user runs it: Grain input
from TFDS, sharded batches, the NaN/Inf guard, metrics fetched every log_every steps, one
evaluation and one checkpoint at the end. Its rate is counted from the step after the first
(compilation excluded) to the end of the loop, the final evaluation and checkpoint included,
and over its training steps alone (the log intervals); the minimal loop's from its second step
to its last. Rounds alternate trainer and minimal loop so that both see the same machine; each
ratio is taken within a round, and the table gives the medians.
"""

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigmodel_jax import config as config_lib  # noqa: E402
from bigmodel_jax import models
from bigmodel_jax.data import pipeline  # noqa: E402
from bigmodel_jax.trainer import optim, train  # noqa: E402

DEFAULT_CONFIGS = "configs/mnist1d.py:cnn,configs/pycode.py:transformer"
DEFAULT_STEPS = {"configs/mnist1d.py:cnn": 2000, "configs/pycode.py:transformer": 100}


def trainer_rate(config, steps: int) -> tuple[float, float]:
  """Steps/s of the trainer: over steps 2..N with the final evaluation and checkpoint (its
  results.json steps_per_sec), and over the training steps alone (metrics.jsonl's
  train/steps_per_sec intervals, which end before each evaluation and checkpoint)."""
  with tempfile.TemporaryDirectory() as workdir:
    results = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
  intervals = [r["train/steps_per_sec"] for r in rows if "train/steps_per_sec" in r]
  steady = len(intervals) / sum(1 / r for r in intervals)  # equal step counts: harmonic mean
  return results["steps_per_sec"], steady


def minimal_rate(config, steps: int, data: list[dict[str, np.ndarray]], num_outputs: int) -> float:
  """Steps/s of the hand-written loop over steps 2..N."""
  model = models.build(config.model, num_outputs)
  schedule = optim.make_schedule(config.schedule, config.optimizer.learning_rate, steps)
  tx = optim.make_optimizer(config.optimizer, schedule)
  batches = [jax.tree.map(jnp.asarray, b) for b in data]
  variables = jax.jit(functools.partial(model.init, train=False))(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, batches[0]["inputs"])
  params = variables.pop("params")
  model_state = dict(variables)
  opt_state = tx.init(params)
  dtype = None if config.dtype == "float32" else jnp.dtype(config.dtype)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def step(params, opt_state, model_state, batch, rng):
    def loss_fn(p):
      x = batch["inputs"]
      if dtype is not None:
        p = jax.tree.map(lambda a: a.astype(dtype), p)
        x = x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
      variables, rngs = {"params": p, **model_state}, {"dropout": rng}
      if model_state:
        logits, new_state = model.apply(variables, x, train=True, rngs=rngs,
                                        mutable=list(model_state))
      else:
        logits, new_state = model.apply(variables, x, train=True, rngs=rngs), model_state
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), batch["label"]).mean()
      return loss, new_state

    (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, new_state, loss

  rng = jax.random.PRNGKey(2)
  params, opt_state, model_state, loss = step(params, opt_state, model_state, batches[0], rng)
  loss.block_until_ready()
  t = time.time()
  for i in range(1, steps):
    params, opt_state, model_state, loss = step(params, opt_state, model_state,
                                                batches[i % len(batches)], rng)
  loss.block_until_ready()
  return (steps - 1) / (time.time() - t)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--configs", default=DEFAULT_CONFIGS)
  p.add_argument("--steps", type=int, default=0, help="0: per config (DEFAULT_STEPS)")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--on_device", default="", help="true/false: override data.on_device")
  p.add_argument("--steps_per_call", type=int, default=0, help="> 0: override steps_per_call")
  args = p.parse_args()
  rows = []
  for name in args.configs.split(","):
    config = config_lib.load_config_file(name)
    steps = args.steps or DEFAULT_STEPS.get(name, 500)
    config.total_steps, config.total_epochs = steps, None
    config.log_every = min(config.log_every, steps)
    config.eval_every = config.checkpoint_every = steps
    config.schedule.warmup_steps = min(config.schedule.warmup_steps, steps // 10)
    if args.on_device:
      config.data.on_device = args.on_device.lower() == "true"
    if args.steps_per_call:
      config.steps_per_call = args.steps_per_call
    sources = pipeline.load(config.data)
    order = np.random.default_rng(0).permutation(len(sources.train))
    n = min(64, len(order) // config.batch_size)
    data = [sources.train.gather(order[i * config.batch_size:(i + 1) * config.batch_size])
            for i in range(n)]
    whole, steady, minimal = [], [], []
    for r in range(args.rounds):
      w, s = trainer_rate(config, steps)
      whole.append(w)
      steady.append(s)
      minimal.append(minimal_rate(config, steps, data, sources.num_outputs))
      print(f"{name} round {r}: trainer {w:.1f} steps/s ({s:.1f} without the final eval and "
            f"checkpoint), minimal loop {minimal[-1]:.1f} steps/s", flush=True)
    # Ratios per round (the two sides ran back to back), then the median over rounds.
    rows.append((name, steps, statistics.median(whole), statistics.median(steady),
                 statistics.median(minimal),
                 statistics.median(w / m for w, m in zip(whole, minimal)),
                 statistics.median(s / m for s, m in zip(steady, minimal))))
  print(f"\n{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} cores; "
        f"median of {args.rounds} alternating rounds")
  print("| config | steps | trainer steps/s | trainer, training steps only | minimal loop "
        "steps/s | ratio | ratio, training steps only |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for name, steps, w, s, m, rw, rs in rows:
    print(f"| {name} | {steps} | {w:.4g} | {s:.4g} | {m:.4g} | {rw:.3f} | {rs:.3f} |")


if __name__ == "__main__":
  main()
