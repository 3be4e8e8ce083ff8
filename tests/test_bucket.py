"""Runs that live in a bucket, against a local Cloud Storage (tests/gcs_emulator.py, the `gcs`
fixture): a gs:// workdir ends with the local run's parameters, also after SIGTERM (exit 75) and
a SIGKILL at a random moment; quantize, predict, sample, sweep and report read and write gs://;
a bucket that does not exist is one line, exit 2, nothing written. Two processes with a gs://
workdir: test_multihost.py."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ONE_DEVICE, REPO, run_main, small_config

from bigmodel_jax import storage
from bigmodel_jax.runs import checkpoint
from bigmodel_jax.trainer import train

ARGS = ["--config=configs/mnist1d.py:cnn", "--config.total_steps=1500", "--config.batch_size=32",
        "--config.log_every=100", "--config.eval_every=1500", "--config.checkpoint_every=100"]


@pytest.fixture
def gcs1(gcs) -> dict:
  """The emulator's environment for a run on one device (as the resume tests run)."""
  return {**gcs, **ONE_DEVICE}


@pytest.fixture
def bucket(gcs, monkeypatch, tmp_path):
  """A fresh prefix in the emulator's bucket, this process pointed at the emulator too."""
  for k, v in gcs.items():
    monkeypatch.setenv(k, v)
  return f"gs://bucket/{tmp_path.name}"


def _results(workdir: str) -> dict:
  return json.loads(storage.read_text(storage.join(workdir, "results.json")))


def _logged_steps(workdir: str) -> list[int]:
  text = storage.read_text(storage.join(workdir, "metrics.jsonl"))
  return [json.loads(line)["step"] for line in text.splitlines()]


def _start(workdir: str, gcs: dict) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "bigmodel_jax.main", *ARGS,
                           f"--workdir={workdir}"], cwd=REPO, env={**os.environ, **gcs},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint_after(workdir: str, step: int, proc: subprocess.Popen) -> None:
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if any(s > step for s in checkpoint.saved_steps(workdir)):
      return
    time.sleep(0.02)
  raise AssertionError(f"no checkpoint after step {step} in {workdir}: {proc.poll()}")


def test_a_gs_workdir_ends_as_a_local_one_after_sigterm_and_a_random_sigkill(bucket, gcs1,
                                                                            tmp_path):
  gcs = gcs1
  local = run_main(*ARGS, f"--workdir={tmp_path / 'local'}", env=ONE_DEVICE)
  assert local.returncode == 0, local.stderr
  reference = json.loads((tmp_path / "local" / "results.json").read_text())
  workdir = f"{bucket}/interrupted"
  proc = _start(workdir, gcs)  # preempted: saves to the bucket and exits 75
  _wait_for_checkpoint_after(workdir, 0, proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 75, err[-2000:]
  saved = checkpoint.saved_steps(workdir)[-1]
  assert f"saved the checkpoint of step {saved} in {workdir}/checkpoints" in err
  proc = _start(workdir, gcs)  # killed at a random moment, during a save or not
  _wait_for_checkpoint_after(workdir, saved, proc)
  time.sleep(random.Random(20261203).uniform(0.0, 0.5))
  assert proc.poll() is None, "finished before the kill"
  proc.kill()
  proc.communicate()
  rerun = run_main(*ARGS, f"--workdir={workdir}", env=gcs)
  assert rerun.returncode == 0, rerun.stderr
  results = _results(workdir)
  assert results["params_sha256"] == reference["params_sha256"]
  assert 0 < results["start_step"] < 1500
  assert _logged_steps(workdir) == list(range(100, 1501, 100))
  assert results["checkpoint_wait_s"] >= 0
  assert storage.listdir(workdir) == ["checkpoints", "config.json", "metrics.jsonl",
                                      "results.json", "tensorboard"]
  assert storage.listdir(f"{workdir}/tensorboard")[0].startswith("events.out.tfevents")


def test_a_bucket_that_does_not_exist_is_one_line_and_nothing_is_written(gcs1):
  gcs = gcs1
  for module, args in [("bigmodel_jax.main", [*ARGS, "--workdir=gs://no-such-bucket/run"]),
                       ("bigmodel_jax.report", ["gs://no-such-bucket/sweep"]),
                       ("bigmodel_jax.quantize", ["--workdir=gs://no-such-bucket/run",
                                                  "--out=gs://no-such-bucket/int8"]),
                       ("bigmodel_jax.predict", ["--workdir=gs://no-such-bucket/run",
                                                 "--inputs=gs://no-such-bucket/x.npy",
                                                 "--out=gs://no-such-bucket/logits.npy"])]:
    proc = run_main(*args, env=gcs, module=module)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr
    assert "gs://no-such-bucket" in proc.stderr
    if module == "bigmodel_jax.main":
      assert proc.stderr.count("\n") == 1, proc.stderr  # nothing else on the console


def test_quantize_predict_sweep_and_report_on_gs(bucket, gcs1, tmp_path):
  gcs = gcs1
  spec_file = tmp_path / "sweep_config.py"
  spec_file.write_text(f'''from bigmodel_jax.experiments import sweeps
from bigmodel_jax.config import load_config_file

def get_config(arg="cnn"):
  return load_config_file({os.path.join(REPO, "configs", "mnist1d.py")!r} + ":" + arg)

def get_sweep(arg="cnn"):
  return sweeps.product({{"seed": [0, 1]}})
''')
  root = f"{bucket}/sweep"
  tiny = ["--config.total_steps=12", "--config.batch_size=64", "--config.log_every=4",
          "--config.eval_every=12", "--config.checkpoint_every=12"]
  proc = run_main(f"--config={spec_file}:cnn", f"--root={root}", "--parallel=2", *tiny,
                  env=gcs, module="bigmodel_jax.sweep", timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert {"seed=0", "seed=0.log", "seed=1", "seed=1.log", "sweep.json"} <= set(
      storage.listdir(root))
  assert "Done:" in storage.read_text(f"{root}/seed=0.log")
  again = run_main(f"--config={spec_file}:cnn", f"--root={root}", *tiny, env=gcs,
                   module="bigmodel_jax.sweep")
  assert "2 finished already, 0 to run" in again.stdout, again.stderr

  point = f"{root}/seed=0"
  out = f"{bucket}/int8"
  quantized = run_main(f"--workdir={point}", f"--out={out}", env=gcs,
                       module="bigmodel_jax.quantize")
  assert quantized.returncode == 0, quantized.stderr
  assert storage.listdir(out) == ["config.json", "quantized", "results.json"]
  inputs = tmp_path / "inputs.npy"
  np.save(inputs, np.random.default_rng(0).normal(size=(5, 40)).astype(np.float32))
  storage.write(f"{bucket}/inputs.npy", inputs.read_bytes())
  proc = run_main(f"--workdir={out}", f"--inputs={bucket}/inputs.npy",
                  f"--out={bucket}/logits.npy", env=gcs, module="bigmodel_jax.predict")
  assert proc.returncode == 0, proc.stderr
  local = tmp_path / "logits.npy"
  local.write_bytes(storage.read_bytes(f"{bucket}/logits.npy"))
  assert np.load(local).shape == (5, 10)

  proc = run_main(root, "--metrics=eval/accuracy", env=gcs, module="bigmodel_jax.report")
  assert proc.returncode == 0, proc.stderr
  assert "| 2/2 |" in storage.read_text(f"{root}/report.md")
  assert {"report.csv", "report.tex", "curves_eval_accuracy.png"} <= set(storage.listdir(root))


def test_a_language_model_trained_into_gs_samples_from_there(bucket, gcs):
  c = small_config("transformer", "pycode", total_steps=3, batch_size=16, eval_batch_size=512,
                   log_every=3, eval_every=3, checkpoint_every=3,
                   **{"data.seq_len": 32, "data.eval_split": "test", "schedule.warmup_steps": 1})
  c.model = dict(name="decoder_lm", max_len=32, dim=32, depth=1, num_heads=2, mlp_dim=64)
  train.train_and_evaluate(c, f"{bucket}/lm")  # in this process
  proc = run_main(f"--workdir={bucket}/lm", "--prompt=import ", "--length=8", env=gcs,
                  module="bigmodel_jax.sample")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("import ")



def test_a_data_set_in_a_bucket_is_prepared_once_and_copied_to_the_next_host(bucket, gcs1,
                                                                            tmp_path):
  args = ["--config=configs/mnist1d.py:cnn", "--config.total_steps=20", "--config.log_every=20",
          "--config.eval_every=20", "--config.checkpoint_every=20",
          f"--config.data.data_dir={bucket}/tfds"]
  runs = []
  for host in ("a", "b"):  # each host with a cache of its own
    proc = run_main(*args, f"--workdir={bucket}/run_{host}",
                    env={**gcs1, "BIGMODEL_JAX_CACHE": str(tmp_path / host)})
    assert proc.returncode == 0, proc.stderr
    runs.append(proc.stdout + proc.stderr)
  assert "Preparing data set mnist1d" in runs[0] and "Preparing" not in runs[1]
  assert "dataset_info.json" in storage.listdir(f"{bucket}/tfds/mnist1d/1.0.0")
  assert _results(f"{bucket}/run_a")["params_sha256"] == _results(f"{bucket}/run_b")[
      "params_sha256"]
