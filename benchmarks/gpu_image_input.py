"""ResNet-50 fed by the real JPEG input pipeline against the same compiled step on one batch
already on the accelerator, in one run: does the host keep the accelerator busy?

  python benchmarks/gpu_image_input.py [--folder=/tmp/bigmodel_jpegs] [--workers=-1,8]
      [--batch=256] [--steps=30] [--rounds=3] [--variant=resnet50] [--json=FILE]

The folder (bigmodel_jax.data.jpeg_folder: 2,000 JPEGs around 500 x 375, quality 90, ~90 KB)
is written if missing and prepared into array_record (timed apart, not in the rates).
`configs/image_folder.py:VARIANT` in bfloat16 builds the trainer's own state, step and runner
(runners.JitRunner: the jitted, donated step; uint8 batches normalized on the device). Then,
alternating in --rounds rounds of --steps steps each:
  synthetic  the compiled step again and again on one batch already on the device
  pipeline   the trainer's loop: each step's batch comes from the Grain iterator
             (data.workers processes: decode, Inception crop, flip) and is placed on the device
             while the previous step runs, as train.py does
Both are images/s of the same compiled step; their ratio is the share of the accelerator's
rate the host input sustains. `input_wait` is the share of the pipeline rounds spent blocked on
the iterator (train/input_wait_fraction's measure). Files come from the page cache (the folder
is read once while preparing), as they would after the first epoch on a machine with the RAM.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigmodel_jax import config as config_lib  # noqa: E402
from bigmodel_jax.data import jpeg_folder, pipeline, tasks  # noqa: E402
from bigmodel_jax.trainer import build as build_lib  # noqa: E402
from bigmodel_jax.trainer import runners  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--folder", default="/tmp/bigmodel_jpegs")
  p.add_argument("--variant", default="resnet50", help="configs/image_folder.py variant")
  p.add_argument("--workers", default="-1", help="comma list of data.workers (-1: one per core)")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=30, help="steps per round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--json", default="")
  args = p.parse_args()

  if not os.path.isdir(os.path.join(args.folder, "train")):
    t = time.perf_counter()
    jpeg_folder.write_synthetic(args.folder)
    print(f"wrote {args.folder} in {time.perf_counter() - t:.1f} s", flush=True)
  config = config_lib.load_config_file(f"configs/image_folder.py:{args.variant}")
  config.data.path = args.folder
  config.dtype = args.dtype
  config.batch_size = args.batch
  t = time.perf_counter()
  sources = tasks.load(config)  # prepares the folder into array_record once
  print(f"data ready in {time.perf_counter() - t:.1f} s: {len(sources.train):,} training images",
        flush=True)
  b = build_lib.build(config, build_lib.example_of(sources.train), sources.num_outputs, 10**6)
  state, shardings = b.create_state(config.seed)
  device = jax.devices()[0]
  print(f"{device.device_kind} ({device.platform}) x {jax.device_count()}, {os.cpu_count()} "
        f"cores, jax {jax.__version__}; {config.model.name} {args.variant} {args.dtype}, batch "
        f"{args.batch}", flush=True)

  rows = []
  for workers in [int(w) for w in args.workers.split(",")]:
    it = pipeline.train_iterator(sources.train, args.batch, config.seed, workers)
    runner = runners.make(config, b, shardings, it, sources.train, 10**6)
    t = time.perf_counter()
    fixed = runner.next_batch(0)  # the synthetic rounds' batch: real images, on the device
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    state, m = runner.call(state, fixed, 1)
    float(m["loss"])
    compile_s = time.perf_counter() - t

    def synthetic(n, state):
      t = time.perf_counter()
      for _ in range(n):
        state, m = runner.call(state, fixed, 1)
      float(m["loss"])  # waits for the last step
      return args.batch * n / (time.perf_counter() - t), 0.0, state

    def real(n, state):
      runner.take_waited()
      t = time.perf_counter()
      batch = runner.next_batch(0)
      for i in range(n):
        state, m = runner.call(state, batch, 1)
        if i + 1 < n:
          batch = runner.next_batch(0)  # read and placed while the step runs
      float(m["loss"])
      s = time.perf_counter() - t
      return args.batch * n / s, runner.take_waited() / s, state

    _, _, state = real(args.steps, state)  # warm-up: the workers fill their buffers
    _, _, state = synthetic(3, state)
    synth, pipe, waits = [], [], []
    for _ in range(args.rounds):
      rate, _, state = synthetic(args.steps, state)
      synth.append(rate)
      rate, wait, state = real(args.steps, state)
      pipe.append(rate)
      waits.append(wait)
    it.close()
    row = dict(workers=it.workers, synthetic_images_per_s=statistics.median(synth),
               pipeline_images_per_s=statistics.median(pipe),
               ratio=statistics.median(p / s for p, s in zip(pipe, synth)),
               input_wait=statistics.median(waits), first_batch_s=first_s,
               first_step_s=compile_s, synthetic_rounds=synth, pipeline_rounds=pipe)
    rows.append(row)
    print(json.dumps(row), flush=True)

  print("\n| data.workers | synthetic images/s | pipeline images/s | ratio | input wait |")
  print("| --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['workers']} | {r['synthetic_images_per_s']:,.0f} | "
          f"{r['pipeline_images_per_s']:,.0f} | {r['ratio']:.3f} | {r['input_wait']:.3f} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(device=device.device_kind, cores=os.cpu_count(), jax=jax.__version__,
                     variant=args.variant, dtype=args.dtype, batch=args.batch, rows=rows), f,
                indent=1)


if __name__ == "__main__":
  main()
