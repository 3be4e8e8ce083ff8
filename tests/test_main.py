"""The command line: bad input gets one line naming the problem, exit 2, and nothing written."""

import json
import os
import shutil

import pytest
from conftest import REPO, run_main

CONFIG = "--config=configs/mnist1d.py:cnn"


def _file(tmp, name, text):
  (tmp / name).write_text(text)
  return str(tmp / name)


def _old_run(tmp, **changes):  # a workdir holding a run of a different config
  from bigmodel_jax import config as config_lib
  c = config_lib.to_dict(config_lib.load_config_file(os.path.join(REPO, "configs/mnist1d.py:cnn")))
  c.update(changes)
  (tmp / "w").mkdir()
  (tmp / "w" / "config.json").write_text(json.dumps(c))


def _broken_data(tmp):  # mnist1d's prepared files, the arrays truncated
  src = os.path.join(os.environ["TFDS_DATA_DIR"], "mnist1d")
  if not os.path.isdir(src):  # prepare it first (any earlier test may have)
    assert run_main(CONFIG, "--dry_run").returncode in (0, 1)
    from bigmodel_jax.data import pipeline
    from conftest import small_config
    pipeline.load(small_config("cnn").data)
  shutil.copytree(src, tmp / "data" / "mnist1d")
  for path in (tmp / "data" / "mnist1d").rglob("*array_record*"):
    os.truncate(path, 100)
  return str(tmp / "data")


W = "--workdir={tmp}/w"
# (arguments, the error line must contain, setup(tmp) -> value for {setup} or None)
BAD_INPUT = [
    # flags
    ([CONFIG, "--no_such_flag=1", W], "Unknown command line flag 'no_such_flag'", None),
    ([W], "--config is required", None),
    ([CONFIG], "--workdir is required", None),
    ([CONFIG, W, "stray_argument"], "unexpected arguments: stray_argument", None),
    ([CONFIG, W, "--dry_run", "--dry_run_devices=0"], "--dry_run_devices must be positive", None),
    ([CONFIG, W, "--coordinator_address=localhost:1234"],
     "--coordinator_address needs --num_processes and --process_id", None),
    # config keys and types
    ([CONFIG, W, "--config.optimizer.lr=0.1"],
     "unknown config key 'optimizer.lr'; nearest: optimizer.learning_rate", None),
    ([CONFIG, W, "--config.batchsize=64"], "unknown config key 'batchsize'; nearest: batch_size", None),
    ([CONFIG, W, "--config.optimizer.wd=0.1"], "nearest: optimizer.weight_decay", None),
    ([CONFIG, W, "--config.batch_size=abc"], "--config.batch_size=abc: invalid literal for int()", None),
    # config values
    ([CONFIG, W, "--config.batch_size=0"], "batch_size must be positive, got 0", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.total_steps=0"],
     "total_steps must be positive, got 0", None),
    ([CONFIG, W, "--config.checkpoint_keep=0"], "checkpoint_keep must be positive", None),
    ([CONFIG, W, "--config.dtype=float8"], "dtype must be float32, bfloat16 or float16", None),
    ([CONFIG, W, "--config.nan_policy=ignore"], "nan_policy must be stop or skip, got 'ignore'", None),
    ([CONFIG, W, "--config.parallel.strategy=horovod"], "parallel.strategy must be jit or pmap", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.model.name=nope"],
     "unknown model 'nope'; known: cnn, decoder_lm", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.optimizer.name=adamx"],
     "unknown optimizer 'adamx'", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.schedule.name=nope"], "unknown schedule 'nope'",
     None),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.augment=mixup"],
     "unknown data.augment 'mixup'", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.grad_accum_steps=3"],
     "must be a whole micro-batch", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.model.channels=(8, 8)"], "cannot be built",
     None),
    # meshes
    ([CONFIG, W, "--config.batch_size=100"], "batch_size=100 does not divide over the 8", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.mesh.data=3"], "needs 3 devices, but 8 are",
     None),
    ([CONFIG, W, "--config.batch_size=64", "--config.sharding=zero3"],
     "unknown sharding preset 'zero3'", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.sharding_rules=mlp:tensor"],
     "sharding_rules: 'mlp:tensor' is not LOGICAL=MESH_AXIS", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.mesh.pipeline=2"],
     "unknown config key 'mesh.pipeline'", None),
    # config files
    (["--config=configs/no_such_file.py", W], "config file not found: configs/no_such_file.py", None),
    (["--config=configs/mnist1d.py:nonsense", W], "unknown variant 'nonsense'", None),
    (["--config={setup}", W], "does not import: ModuleNotFoundError: No module named 'no_such_module'",
     lambda tmp: _file(tmp, "broken.py", "import no_such_module\n")),
    (["--config={setup}", W], "does not import: SyntaxError",
     lambda tmp: _file(tmp, "syntax.py", "def get_config(:\n")),
    (["--config={setup}", W], "defines no get_config(arg)",
     lambda tmp: _file(tmp, "empty.py", "X = 1\n")),
    # data sets
    ([CONFIG, W, "--config.batch_size=64", "--config.data.name=nope"], "unknown data set 'nope'",
     None),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.data_dir={setup}"],
     "data set 'mnist1d' could not be loaded", _broken_data),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.label_key=target"], "target", None),
    # workdirs
    ([CONFIG, "--workdir={setup}"], "exists and is not a directory",
     lambda tmp: _file(tmp, "file", "keep me")),
    ([CONFIG, "--workdir=/proc/1/bigmodel_run"], "is not writable", None),
    ([CONFIG, W, "--config.batch_size=64"], "holds a run with a different config (seed)",
     lambda tmp: _old_run(tmp, seed=1, batch_size=64)),
    ([CONFIG, W], "config.json is unreadable",
     lambda tmp: (tmp / "w").mkdir() or (tmp / "w" / "config.json").write_text("{")),
    ([CONFIG, W, "--config.batch_size=64", "--config.init_from={setup}"],
     "init_from: no checkpoints in", lambda tmp: str(tmp / "nothing_here")),
]


def _snapshot(root) -> dict[str, float]:
  return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("args, expected, setup", BAD_INPUT,
                         ids=[f"{i}-{case[1][:30]}" for i, case in enumerate(BAD_INPUT)])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, args, expected, setup):
  value = setup(tmp_path) if setup else None
  before = _snapshot(tmp_path)
  proc = run_main(*(a.format(tmp=tmp_path, setup=value) for a in args))
  assert proc.returncode == 2, proc.stderr[-3000:]
  # First use of a data set may print its preparation before; the error itself is one line.
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert expected.format(tmp=tmp_path) in last, last
  assert _snapshot(tmp_path) == before


def test_the_bad_input_table_is_large():
  assert len(BAD_INPUT) >= 25


def test_traceback_on_request(tmp_path):
  proc = run_main(CONFIG, "--config.model.name=nope", f"--workdir={tmp_path / 'w'}", "--traceback")
  assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_config_docstrings_hold_their_run_command():
  root = os.path.join(REPO, "configs")
  names = [os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root)
           for f in files if f.endswith(".py")]
  assert "paper/mnist1d.py" in names
  for name in sorted(names):
    text = open(os.path.join(root, name)).read()
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
