"""Exact resume: a real training process killed with SIGKILL at random moments, then rerun with
the same command, ends with parameters bit-identical to a run that was never interrupted."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from conftest import REPO, run_main

ARGS = ["--config=configs/mnist1d.py:cnn", "--config.total_steps=300", "--config.batch_size=64",
        "--config.checkpoint_every=30", "--config.log_every=10", "--config.eval_every=150"]


def _wait_for(predicate, proc, timeout=120.0):
  end = time.time() + timeout
  while time.time() < end and proc.poll() is None and not predicate():
    time.sleep(0.02)


def _final_state(workdir):
  path = os.path.join(workdir, "checkpoints", "300", "state")
  return ocp.StandardCheckpointer().restore(path)


def test_sigkill_at_random_moments_then_rerun_is_bit_identical(tmp_path):
  reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
  done = run_main(*ARGS, f"--workdir={reference}")
  assert done.returncode == 0, done.stderr

  rng = random.Random()
  kills = []
  ckpt_dir = os.path.join(killed, "checkpoints")
  for attempt in range(3):
    proc = subprocess.Popen([sys.executable, "-m", "bigmodel_jax.main", *ARGS, f"--workdir={killed}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # First kill: somewhere in training; later ones: after some checkpoint exists, maybe mid-write.
    if attempt == 0:
      _wait_for(lambda: os.path.exists(os.path.join(killed, "metrics.jsonl")), proc)
    else:
      _wait_for(lambda: os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir)), proc)
    delay = rng.uniform(0.0, 1.0)
    time.sleep(delay)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills.append(round(delay, 3))
    proc.wait()
  assert kills, "every run finished before it could be killed; the test needs a longer run"

  final = run_main(*ARGS, f"--workdir={killed}")
  assert final.returncode == 0, final.stderr
  with open(os.path.join(reference, "results.json")) as f:
    ref_results = json.load(f)
  with open(os.path.join(killed, "results.json")) as f:
    killed_results = json.load(f)
  assert killed_results["params_sha256"] == ref_results["params_sha256"], f"kills after {kills}"
  assert killed_results["eval/accuracy"] == ref_results["eval/accuracy"]
  assert 0 < killed_results["start_step"] <= 300  # the last run resumed from a checkpoint
  print(f"killed after {kills} s; the last run resumed at step {killed_results['start_step']}")

  # The saved final checkpoints are equal bit for bit too, optimizer state and step included.
  a, b = _final_state(reference), _final_state(killed)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), f"kills after {kills}"

  # metrics.jsonl holds each logged step once, as if the run had never stopped.
  with open(os.path.join(killed, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f if "train/loss" in line]
  assert steps == list(range(10, 301, 10)), f"kills after {kills}"
