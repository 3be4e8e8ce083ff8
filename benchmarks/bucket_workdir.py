"""The default experiment with its workdir in a bucket vs on the local disk (issue 32).

  .venv/bin/python benchmarks/bucket_workdir.py [--repeats=3]

Starts the local Cloud Storage of the tests (tests/gcs_emulator.py, in memory, on a free port),
then runs `python -m bigmodel_jax.main --config=configs/mnist1d.py:cnn` alternately with a local
workdir and a gs:// one, `repeats` times each (alternating: the machine's speed drifts), and
prints the median wall time of each (the whole process: start, data, compilation, 8,000 steps,
8 checkpoints, evaluation) and their ratio, and the loop's wait per checkpoint (results.json's
checkpoint_wait_s over the checkpoints saved). The data set is prepared before timing. Leaves
out: a real bucket's latency (the emulator is on this machine: it measures our code's overhead,
not the network's).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
ARGS = [sys.executable, "-m", "bigmodel_jax.main", "--config=configs/mnist1d.py:cnn"]


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  emulator = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "gcs_emulator.py"),
                               "--bucket=bench"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
  env = {**os.environ, "STORAGE_EMULATOR_HOST":
         f"http://127.0.0.1:{emulator.stdout.readline().split()[1]}"}
  os.environ.update(env)
  from bigmodel_jax import storage
  try:
    with tempfile.TemporaryDirectory() as tmp:
      subprocess.run([*ARGS, f"--workdir={tmp}/warm", "--config.total_steps=10"], cwd=REPO,
                     env=env, check=True, capture_output=True)  # the data set, prepared
      times: dict[str, list[float]] = {"local": [], "gs": []}
      waits: dict[str, list[float]] = {"local": [], "gs": []}
      for i in range(args.repeats):
        for where in ("local", "gs"):
          workdir = f"{tmp}/run{i}" if where == "local" else f"gs://bench/run{i}"
          t0 = time.time()
          subprocess.run([*ARGS, f"--workdir={workdir}"], cwd=REPO, env=env, check=True,
                         capture_output=True)
          times[where].append(time.time() - t0)
          results = json.loads(storage.read_text(storage.join(workdir, "results.json")))
          waits[where].append(results["checkpoint_wait_s"] / 8)  # steps 1000, ..., 8000
    local, gs = (statistics.median(times[w]) for w in ("local", "gs"))
    print(f"wall time, median of {args.repeats}: local {local:.1f} s, gs:// (emulator) "
          f"{gs:.1f} s, ratio {gs / local:.3f}")
    for where in ("local", "gs"):
      print(f"{where}: wall times {', '.join(f'{t:.1f}' for t in times[where])} s; loop's wait "
            f"per checkpoint {statistics.median(waits[where]) * 1000:.0f} ms (median)")
  finally:
    emulator.kill()


if __name__ == "__main__":
  main()
