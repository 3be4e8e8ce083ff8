"""Input pipeline against the train step, per offline data set, side by side in one process.

  .venv/bin/python benchmarks/input_pipeline.py [--configs=configs/mnist1d.py:cnn,...]
      [--seconds=3] [--rounds=3]

For each config (its data set, model and batch size), three rates in examples/s, each over about
--seconds of wall time, alternating within a round:
  pipeline   the training iterator alone (Grain: sampling, gathering, preprocessing) plus
             sharding.global_batch, as the trainer does it (on one process the numpy batch
             itself: the step's call copies it to the devices);
  step       the jitted train step alone, on batches already on the devices (what it consumes);
  together   the step fed by the pipeline, as in the trainer's loop.
  on device  where the split can live on the devices (data.on_device: in memory, no random
             augmentation), the step that samples its own batch there (no host work).
  K per call the trainer with steps_per_call=K (--steps_per_call): K batches read, stacked and
             fed per call, and (where it applies) K updates per call sampling on the device;
             only for steps under 10 ms (over 100 calls/s), where per-call costs matter.
"waiting" is the share of the fed loop's time that the step alone would not need:
1 - together / step (and 1 - on device / step, 1 - K per call / step; negative where the fed
loop outruns one step per call on batches already in place). Targets (issue 7): pipeline >= 10x
the step, waiting < 2%.
"""

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigmodel_jax import config as config_lib  # noqa: E402
from bigmodel_jax.data import on_device, pipeline, tasks  # noqa: E402
from bigmodel_jax.faults import ConfigError  # noqa: E402
from bigmodel_jax.trainer import build as build_lib  # noqa: E402
from bigmodel_jax.trainer import sharding, steps  # noqa: E402

DEFAULT_CONFIGS = ("configs/mnist1d.py:cnn,configs/digits.py:cnn,configs/pycode.py:transformer,"
                   "configs/seq2seq.py:transformer")


def timed(fn, seconds: float) -> float:
  """Calls per second of fn over about `seconds` (at least 3 calls), after one warm-up call."""
  jax.block_until_ready(fn())
  calls, t0 = 0, time.perf_counter()
  while calls < 3 or time.perf_counter() - t0 < seconds:
    out = fn()
    calls += 1
  jax.block_until_ready(out)
  return calls / (time.perf_counter() - t0)


def measure(name: str, seconds: float, rounds: int, k: int) -> dict:
  config = config_lib.load_config_file(name)
  sources = tasks.load(config)
  example = build_lib.example_of(sources.train)
  b = build_lib.build(config, example, sources.num_outputs, 10**6)  # the trainer's build
  plan = b.plan
  batch_size = config.batch_size
  place = lambda b: sharding.global_batch(b, plan.batch_sharding)  # noqa: E731 (the trainer's)
  iterator = pipeline.train_iterator(sources.train, batch_size, config.seed)
  state, shardings = b.create_state(config.seed)
  step = steps.jit_train_step(plan, shardings, **b.step_options)
  on_device_batches = [jax.device_put(next(iterator), plan.batch_sharding) for _ in range(8)]
  box = {"state": state, "i": 0}
  options = b.step_options
  several = steps.jit_train_step(plan, shardings, steps_per_call=k, **options)
  stacked = jax.sharding.NamedSharding(plan.mesh, jax.sharding.PartitionSpec(None, plan.batch_axes))
  try:
    device_data = on_device.DeviceData(sources.train, batch_size, config.seed, plan.mesh, k)
    sample = functools.partial(on_device.sample, global_batch=batch_size)
    sampled = steps.jit_train_step(plan, shardings, sample=sample, **options)
    sampled_k = steps.jit_train_step(plan, shardings, sample=sample, steps_per_call=k, **options)
  except ConfigError:
    device_data = None

  def train_sampled():
    box["state"], metrics = sampled(box["state"], device_data.inputs(box["i"]))
    return metrics

  def train_sampled_k():
    box["state"], metrics = sampled_k(box["state"], device_data.inputs(box["i"]))
    box["i"] += k
    return metrics

  def train_k():
    batches = jax.tree.map(lambda *b: np.stack(b), *(next(iterator) for _ in range(k)))
    box["state"], metrics = several(box["state"], sharding.global_batch(batches, stacked))
    return metrics

  def train_on(batch):
    box["state"], metrics = step(box["state"], batch)
    return metrics

  def device_batch():
    box["i"] += 1
    return on_device_batches[box["i"] % len(on_device_batches)]

  rates = {"pipeline": [], "step": [], "together": [], "on_device": [], "k": [], "on_device_k": []}
  # K per call only where a step is short enough for per-call costs to matter (under 10 ms):
  # compiling K unrolled steps of the larger models takes minutes
  per_call = timed(lambda: train_on(device_batch()), 1.0) > 100
  for _ in range(rounds):
    rates["pipeline"].append(timed(lambda: place(next(iterator)), seconds) * batch_size)
    rates["step"].append(timed(lambda: train_on(device_batch()), seconds) * batch_size)
    rates["together"].append(timed(lambda: train_on(place(next(iterator))), seconds) * batch_size)
    if per_call:
      rates["k"].append(timed(train_k, seconds) * batch_size * k)
    if device_data is not None:
      rates["on_device"].append(timed(train_sampled, seconds) * batch_size)
      if per_call:
        rates["on_device_k"].append(timed(train_sampled_k, seconds) * batch_size * k)
  wait = lambda fed: statistics.median(1 - f / s for f, s in zip(fed, rates["step"]))  # noqa: E731
  return {"config": name, "data": config.data.name, "batch": batch_size,
          **{k: statistics.median(v) if v else None for k, v in rates.items()},
          "waiting": wait(rates["together"]),
          "waiting_on_device": wait(rates["on_device"]) if rates["on_device"] else None,
          "waiting_k": wait(rates["k"]) if rates["k"] else None,
          "waiting_on_device_k": wait(rates["on_device_k"]) if rates["on_device_k"] else None}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--configs", default=DEFAULT_CONFIGS)
  p.add_argument("--seconds", type=float, default=3.0)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps_per_call", type=int, default=10, help="K of the K-per-call columns")
  args = p.parse_args()
  k = args.steps_per_call
  rows = [measure(name, args.seconds, args.rounds, k) for name in args.configs.split(",")]
  print(f"\n{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} cores; "
        f"median of {args.rounds} rounds of ~{args.seconds:g} s per rate")
  print("| config | data | batch | pipeline examples/s | step examples/s | pipeline / step | "
        "fed step examples/s | waiting | on-device step examples/s | waiting, on device | "
        f"fed, {k} per call | waiting | on device, {k} per call | waiting |")
  print("|" + " --- |" * 14)
  pair = lambda rate, w: f"{rate:,.0f} | {100 * w:.1f}%" if rate else "- | -"  # noqa: E731
  for r in rows:
    print(f"| {r['config']} | {r['data']} | {r['batch']} | {r['pipeline']:,.0f} | {r['step']:,.0f} | "
          f"{r['pipeline'] / r['step']:.1f}x | {pair(r['together'], r['waiting'])} | "
          f"{pair(r['on_device'], r['waiting_on_device'])} | {pair(r['k'], r['waiting_k'])} | "
          f"{pair(r['on_device_k'], r['waiting_on_device_k'])} |")


if __name__ == "__main__":
  main()
