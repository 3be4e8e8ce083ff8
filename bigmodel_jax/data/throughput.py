"""How fast the configured training input runs alone, without a model (as tfds.benchmark does
for a tf.data pipeline, for this one).

  python -m bigmodel_jax.data.throughput --config=configs/image_folder.py:resnet50 \
      --config.data.path=DIR [--config.data.workers=N] [--batches=50] [--warmup=4]

Iterates the trainer's own iterator (pipeline.train_iterator: Grain, data.workers processes or
reader threads) for --batches after --warmup batches (worker start-up, reported apart), and
prints examples/s and batches/s; then where the time of one example goes, timed stage by stage
on this process alone over one batch: reading the record, decoding, augmentation (crop, resize,
flip) and batching (for data that is not decoded from files: gathering as a whole). The last
line is one JSON object: examples_per_sec, batches_per_sec, workers, ...
"""

import json
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import cli, faults
from bigmodel_jax import config as config_lib
from bigmodel_jax.data import images, pipeline, records, tasks


def stages(examples: Any, seed: int, batch: int, rounds: int = 4) -> dict[str, float]:
  """Milliseconds per example of each stage of a training batch, on this thread alone: the
  fastest of `rounds` batches (the first warms caches)."""
  best: dict[str, float] = {}
  for r in range(rounds):
    first = r * batch % max(1, len(examples) - batch)
    for k, v in _stages(examples, seed, np.arange(first, first + min(batch, len(examples)))).items():
      best[k] = min(v, best.get(k, v))
  return best


def _stages(examples: Any, seed: int, indices: np.ndarray) -> dict[str, float]:
  random = getattr(examples, "random", False)
  rngs = ([np.random.default_rng((seed, int(p))) for p in indices] if random else
          [None] * len(indices))
  per = 1e3 / len(indices)
  if not (isinstance(examples, records.Records) and getattr(examples, "decodes_files", False)):
    t = time.perf_counter()
    pipeline.trainer_batch(examples, indices, rngs if random else None)
    return {"gather": (time.perf_counter() - t) * per}
  p = examples.preprocess
  inception = p.augment == "inception_crop"
  t0 = time.perf_counter()
  rows = [examples.source[i] for i in indices.tolist()]
  t1 = time.perf_counter()
  decoded = [images.decode_scaled(r[examples.input_key], p.size, rng if inception else None,
                                  p.eval_crop) for r, rng in zip(rows, rngs)]
  t2 = time.perf_counter()
  crops = [images.crop_resize(pil, box, p.size, flip=inception and rng.random() < 0.5)
           for (pil, box), rng in zip(decoded, rngs)]
  t3 = time.perf_counter()
  stacked = np.stack(crops)
  labels = np.asarray([r[examples.label_key] for r in rows], np.int32)
  t4 = time.perf_counter()
  p.augment_batch(stacked, rngs if random else None)
  t5 = time.perf_counter()
  del labels
  return {"read": (t1 - t0) * per, "decode": (t2 - t1) * per,
          "augment": ((t3 - t2) + (t5 - t4)) * per, "batch": (t4 - t3) * per}


def measure(config: ml_collections.ConfigDict, batches: int, warmup: int) -> dict[str, Any]:
  sources = tasks.load(config)
  it = pipeline.train_iterator(sources.train, config.batch_size, config.seed, config.data.workers)
  local = config.batch_size // jax.process_count()
  try:
    t0 = time.perf_counter()
    for _ in range(warmup):
      next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
      next(it)
    t2 = time.perf_counter()
  finally:
    it.close()
  split = stages(sources.train, config.seed, local)
  return {"data": config.data.name or "tasks", "batch_size": local, "batches": batches,
          "workers": it.workers, "threads": 0 if it.workers else it.threads,
          "examples_per_sec": round(batches * local / (t2 - t1), 1),
          "batches_per_sec": round(batches / (t2 - t1), 3),
          "startup_s": round(t1 - t0, 2),
          "stages_ms_per_example": {k: round(v, 3) for k, v in split.items()},
          "one_thread_examples_per_sec": round(1e3 / max(sum(split.values()), 1e-6), 1)}


def main(argv: list[str]) -> None:
  def body() -> None:
    config = flags.FLAGS.config
    config_lib.check_values(config)
    if flags.FLAGS.batches <= 0 or flags.FLAGS.warmup < 0:
      raise faults.ConfigError("--batches must be positive and --warmup >= 0")
    r = measure(config, flags.FLAGS.batches, flags.FLAGS.warmup)
    how = f"{r['workers']} worker processes" if r["workers"] else f"{r['threads']} reader threads"
    print(f"{r['data']}: {r['examples_per_sec']:,.1f} examples/s, {r['batches_per_sec']:.2f} "
          f"batches/s of {r['batch_size']} ({how}; {r['batches']} batches after "
          f"{flags.FLAGS.warmup} taking {r['startup_s']} s)")
    stages_ms = r["stages_ms_per_example"]
    total = max(sum(stages_ms.values()), 1e-6)
    print("one example on one thread: " + ", ".join(
        f"{k} {v:.3f} ms ({v / total:.0%})" for k, v in stages_ms.items())
        + f" = {r['one_thread_examples_per_sec']:,.1f} examples/s")
    print(json.dumps(r))

  cli.run_command(argv, body)


def run() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment file: path.py[:arg].",
                                  lock_config=True)
  flags.DEFINE_integer("batches", 50, "Batches timed.")
  flags.DEFINE_integer("warmup", 4, "Batches read first, not timed (worker start-up).")
  flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
  app.run(main, flags_parser=cli.parse_command_line)


if __name__ == "__main__":
  run()
