"""The command line: bad input gets one line naming the problem, exit 2, and nothing written."""

import os

import pytest
from conftest import REPO, run_main

CONFIG = "--config=configs/mnist1d.py:cnn"


@pytest.mark.parametrize("args, expected", [
    ([CONFIG, "--config.optimizer.lr=0.1"],
     "unknown config key 'optimizer.lr'; nearest: optimizer.learning_rate"),
    ([CONFIG, "--config.batchsize=64"], "unknown config key 'batchsize'; nearest: batch_size"),
    ([CONFIG, "--config.optimizer.wd=0.1"], "nearest: optimizer.weight_decay"),
    ([CONFIG, "--config.mesh.pipeline=2"], "unknown config key 'mesh.pipeline'"),
    ([CONFIG, "--config.batch_size=abc"], "--config.batch_size=abc: invalid literal for int()"),
    ([CONFIG, "--config.batch_size=64", "--config.model.name=nope"],
     "unknown model 'nope'; known: cnn, decoder_lm"),
    ([CONFIG, "--config.batch_size=64", "--config.data.name=nope"], "unknown data set 'nope'"),
    ([CONFIG, "--config.batch_size=100"], "batch_size=100 does not divide over the 8"),
    (["--config=configs/no_such_file.py"], "config file not found: configs/no_such_file.py"),
    (["--config=configs/mnist1d.py:nonsense"], "unknown variant 'nonsense'"),
    ([CONFIG, "stray_argument"], "unexpected arguments: stray_argument"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, expected):
  workdir = tmp_path / "w"
  proc = run_main(*args, f"--workdir={workdir}")
  assert proc.returncode == 2, proc.stderr
  # First use of a data set may print its preparation before; the error itself is one line.
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
  assert expected in last
  assert not workdir.exists()


def test_config_file_that_does_not_import(tmp_path):
  bad = tmp_path / "broken.py"
  bad.write_text("import no_such_module\n")
  proc = run_main(f"--config={bad}", f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2
  assert proc.stderr.strip() == (f"error: config file {bad} does not import: "
                                 "ModuleNotFoundError: No module named 'no_such_module'")
  assert not (tmp_path / "w").exists()


def test_workdir_that_is_a_file(tmp_path):
  target = tmp_path / "file"
  target.write_text("keep me")
  proc = run_main(CONFIG, f"--workdir={target}")
  assert proc.returncode == 2 and "is not a directory" in proc.stderr
  assert target.read_text() == "keep me"


def test_traceback_on_request(tmp_path):
  proc = run_main(CONFIG, "--config.model.name=nope", f"--workdir={tmp_path / 'w'}", "--traceback")
  assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_config_docstrings_hold_their_run_command():
  for name in sorted(os.listdir(os.path.join(REPO, "configs"))):
    if name.endswith(".py"):
      text = open(os.path.join(REPO, "configs", name)).read()
      assert f"python -m bigmodel_jax.main --config=configs/{name}" in text, name


def test_same_command_on_one_device_matches_eight(tmp_path):
  import json

  from conftest import small_config

  from bigmodel_jax import train
  args = ["--config.total_steps=20", "--config.log_every=5", "--config.batch_size=64",
          "--config.eval_every=20"]
  proc = run_main(CONFIG, *args, f"--workdir={tmp_path / 'one'}",
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert proc.returncode == 0, proc.stderr
  assert "on 1 devices" in proc.stdout
  eight = train.train_and_evaluate(
      small_config("cnn", total_steps=20, log_every=5, batch_size=64, eval_every=20),
      str(tmp_path / "eight"))
  rows = {}
  for name in ("one", "eight"):
    with open(tmp_path / name / "metrics.jsonl") as f:
      rows[name] = [json.loads(line)["train/loss"] for line in f if "train/loss" in line]
  # Same data order and math; only the order of float reductions differs between the programs.
  assert len(rows["one"]) == 4
  assert max(abs(a - b) for a, b in zip(rows["one"], rows["eight"])) < 1e-4
  with open(tmp_path / "one" / "results.json") as f:
    assert abs(json.load(f)["eval/accuracy"] - eight["eval/accuracy"]) <= 0.002


def test_summary_command(tmp_path):
  import json
  import subprocess
  import sys
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.summary", CONFIG, "--json"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  summary = json.loads(proc.stdout)
  assert summary["num_params"] == 5210 == sum(summary["params_per_module"].values())
  assert summary["params_per_module"] == {"conv_0": 150, "conv_1": 1900, "conv_2": 1900, "head": 1260}
  assert summary["input_shape"] == [40] and summary["num_outputs"] == 10
  assert 50_000 < summary["flops_per_example"] < 80_000
  bad = subprocess.run([sys.executable, "-m", "bigmodel_jax.summary", CONFIG, "--config.model.name=x"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: unknown model 'x'")
