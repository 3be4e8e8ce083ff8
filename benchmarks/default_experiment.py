"""Times the README's default experiment from an empty data dir: data preparation + training.

  .venv/bin/python benchmarks/default_experiment.py [--seeds=0,1,2] [--config=configs/mnist1d.py:cnn]

Each seed runs the real command line in a fresh workdir and a fresh TFDS data dir (so the first-use
preparation of the data set is inside the time) and reports wall time and final test accuracy.
Target (issue 2): >= 90% test accuracy, under 3 minutes on a 2-core CPU.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/mnist1d.py:cnn")
  parser.add_argument("--seeds", default="0")
  args = parser.parse_args()
  print(f"{args.config} on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}")
  print("| seed | wall time (s), data prep included | test accuracy | steps/s |")
  print("| --- | --- | --- | --- |")
  for seed in args.seeds.split(","):
    with tempfile.TemporaryDirectory() as tmp:
      env = {**os.environ, "TFDS_DATA_DIR": os.path.join(tmp, "tfds")}
      env.pop("XLA_FLAGS", None)
      start = time.time()
      subprocess.run([sys.executable, "-m", "bigmodel_jax.main", f"--config={args.config}",
                      f"--workdir={os.path.join(tmp, 'run')}", f"--config.seed={seed}"],
                     cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
      wall = time.time() - start
      with open(os.path.join(tmp, "run", "results.json")) as f:
        results = json.load(f)
    print(f"| {seed} | {wall:.1f} | {results['eval/accuracy']:.3f} | {results['steps_per_sec']:.0f} |",
          flush=True)


if __name__ == "__main__":
  main()
