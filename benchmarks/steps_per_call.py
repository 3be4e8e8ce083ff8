"""Steps/s of the trainer's jitted step at several steps_per_call against a minimal step, with
fine-grained interleaving (this machine's noise is larger than the differences measured).

  .venv/bin/python benchmarks/steps_per_call.py [--config=configs/mnist1d.py:cnn]
      [--ks=1,4,10] [--cycles=200] [--block=40]

Every variant trains its own copy of the model; a cycle runs a block of --block steps of each
variant in turn, and each variant's rate in a cycle is divided by the minimal step's in the same
cycle (seconds apart, so both see the same machine); the table gives the median of those ratios
over --cycles cycles. A second copy of the minimal step shows the method's own spread.
  minimal      one jitted, donated update per call (loss, gradients, optax), batches on device
  minimal K    the same minimal update, K of them per call (unrolled, as the trainer does on a
               CPU), K batches on device: the fair baseline for the trainer at K, since making
               fewer calls is a trick any loop can use
  host K       steps.jit_train_step with K updates per call, fed from Grain on the host as the
               trainer does (K batches read and stacked per call)
  device K     the same with data.on_device (each update samples its batch on the device)
  loop K       device K with the K updates in a rolled lax.scan loop instead of unrolled
The last column divides each trainer variant by the minimal loop at the same K (same cycle).
"""

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigmodel_jax import config as config_lib  # noqa: E402
from bigmodel_jax.data import on_device, pipeline, tasks  # noqa: E402
from bigmodel_jax.trainer import build as build_lib  # noqa: E402
from bigmodel_jax.trainer import sharding, steps  # noqa: E402
from bigmodel_jax.trainer import state as state_lib  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/mnist1d.py:cnn")
  p.add_argument("--ks", default="1,4,10")
  p.add_argument("--loop_ks", default="10", help="K for the rolled-loop variant ('' = none)")
  p.add_argument("--cycles", type=int, default=200)
  p.add_argument("--block", type=int, default=40, help="steps per variant per cycle")
  args = p.parse_args()
  ks = [int(k) for k in args.ks.split(",")]
  loop_ks = [int(k) for k in args.loop_ks.split(",") if k]
  if any(args.block % k for k in ks + loop_ks):
    sys.exit(f"error: --block={args.block} must be a multiple of every K")

  config = config_lib.load_config_file(args.config)
  sources = tasks.load(config)
  example = build_lib.example_of(sources.train)
  b = build_lib.build(config, example, sources.num_outputs, 10**7)  # the trainer's build
  plan, model, tx, options = b.plan, b.model, b.tx, b.step_options
  batch_size = config.batch_size
  stacked = jax.sharding.NamedSharding(plan.mesh, jax.sharding.PartitionSpec(None, plan.batch_axes))
  warm = pipeline.train_iterator(sources.train, batch_size, config.seed)
  device_batches = [jax.device_put(next(warm), plan.batch_sharding) for _ in range(32)]

  def minimal(k=1):
    state, _ = state_lib.create(model, tx, example, config.seed, plan)
    box = {"params": state.params, "opt": state.opt_state, "model": state.model_state}

    def one(params, opt_state, model_state, batch):
      def loss_fn(p):
        variables = {"params": p, **model_state}
        if model_state:
          logits, new = model.apply(variables, batch["inputs"], train=True,
                                    rngs={"dropout": state.rng}, mutable=list(model_state))
        else:
          logits, new = model.apply(variables, batch["inputs"], train=True,
                                    rngs={"dropout": state.rng}), model_state
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), new
      (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, new, loss

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def update(params, opt_state, model_state, batches):  # K stacked batches, K updates
      if k == 1:
        return one(params, opt_state, model_state, batches)
      for j in range(k):  # unrolled, like steps.jit_train_step on a CPU
        params, opt_state, model_state, loss = one(params, opt_state, model_state,
                                                   jax.tree.map(lambda x: x[j], batches))  # noqa: B023
      return params, opt_state, model_state, loss

    feed = device_batches if k == 1 else [
        jax.device_put(jax.tree.map(lambda *b: np.stack(b), *(next(warm) for _ in range(k))),
                       stacked) for _ in range(max(32 // k, 2))]

    def run(i):
      box["params"], box["opt"], box["model"], loss = update(
          box["params"], box["opt"], box["model"], feed[i % len(feed)])
      return loss
    return run, k

  def trainer(k, on_dev, unroll=None):
    state, shardings = state_lib.create(model, tx, example, config.seed, plan)
    sample = functools.partial(on_device.sample, global_batch=batch_size) if on_dev else None
    call = steps.jit_train_step(plan, shardings, sample=sample, steps_per_call=k, unroll=unroll,
                                **options)
    data = on_device.DeviceData(sources.train, batch_size, config.seed, plan.mesh, k) if on_dev else None
    iterator = pipeline.train_iterator(sources.train, batch_size, config.seed)
    box = {"state": state, "done": 0}

    def read():
      if data is not None:
        return data.inputs(box["done"])
      if k == 1:
        return sharding.global_batch(next(iterator), plan.batch_sharding)
      return sharding.global_batch(jax.tree.map(lambda *b: np.stack(b),
                                                *(next(iterator) for _ in range(k))), stacked)

    def run(i):
      box["state"], metrics = call(box["state"], read())
      box["done"] += k
      return metrics
    return run, k

  variants = {"minimal": minimal()}
  for k in ks:
    if k > 1:
      variants[f"minimal {k}"] = minimal(k)
    variants[f"host {k}"] = trainer(k, False)
    variants[f"device {k}"] = trainer(k, True)
  for k in loop_ks:
    variants[f"loop {k}"] = trainer(k, True, unroll=False)
  variants["minimal, again"] = minimal()

  def block(run, k, steps):
    t = time.perf_counter()
    for i in range(steps // k):
      out = run(i)
    jax.block_until_ready(out)
    return steps / (time.perf_counter() - t)

  for name, (run, k) in variants.items():  # compile and warm up
    t = time.perf_counter()
    block(run, k, args.block)
    print(f"{name}: first block (compilation) {time.perf_counter() - t:.1f} s", flush=True)
  rates = {name: [] for name in variants}
  for _ in range(args.cycles):
    for name, (run, k) in variants.items():
      rates[name].append(block(run, k, args.block))
  base = rates["minimal"]
  print(f"\n{args.config}, batch {batch_size}; {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cores; {args.cycles} cycles of {args.block} steps per variant")
  print("| variant | steps/s (median) | ratio to minimal (median per cycle) | ratio to minimal at "
        "the same K |")
  print("| --- | --- | --- | --- |")
  for name, r in rates.items():
    ratio = statistics.median(a / b for a, b in zip(r, base))
    k = name.split()[-1]
    same_k = rates.get("minimal" if k == "1" else f"minimal {k}")
    fair = (f"{statistics.median(a / b for a, b in zip(r, same_k)):.3f}"
            if same_k is not None and not name.startswith("minimal") and k.isdigit() else "")
    print(f"| {name} | {statistics.median(r):,.0f} | {ratio:.3f} | {fair} |")


if __name__ == "__main__":
  main()
