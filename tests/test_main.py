"""The command line: bad input gets one line naming the problem, exit 2, and nothing written."""

import json
import os
import shutil

import pytest
from helpers import ONE_DEVICE, REPO, run_main, run_main_batch

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
    from bigmodel_jax.data import pipeline
    from helpers import small_config
    pipeline.load(small_config("cnn").data)
  shutil.copytree(src, tmp / "data" / "mnist1d")
  for path in (tmp / "data" / "mnist1d").rglob("*array_record*"):
    os.truncate(path, 100)
  return str(tmp / "data")


W = "--workdir={tmp}/w"
GAN = "--config=configs/generative.py:gan"
GAN_WITHOUT_SECOND_OPTIMIZER = """
from bigmodel_jax import config as config_lib
def get_config():
  c = config_lib.default_config()
  c.model.name, c.objective.name, c.data.name, c.data.scale = "gan", "gan", "digits", 1 / 16
  return c
"""
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
    ([CONFIG, W, "--config.batch_size=0"], "batch_size must be a positive integer, got 0", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.total_steps=0"],
     "total_steps must be positive, got 0", None),
    ([CONFIG, W, "--config.checkpoint_keep=0"], "checkpoint_keep must be a positive integer", None),
    ([CONFIG, W, "--config.dtype=float8"], "dtype must be float32, bfloat16 or float16", None),
    ([CONFIG, W, "--config.nan_policy=ignore"], "nan_policy must be stop or skip, got 'ignore'", None),
    ([CONFIG, W, "--config.parallel.strategy=horovod"], "parallel.strategy must be jit or pmap", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.model.name=nope"],
     "unknown model 'nope'; known: captioner, cnn, decoder_lm", None),
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
    ([CONFIG, W, "--config.data.path=/tmp"], "data.path is read by data set image_folder, not "
     "'mnist1d': set --config.data.name=image_folder, or leave data.path empty", None),
    ([CONFIG, W, "--config.data.text_dir=/tmp"], "data.text_dir is read by data set textdir, not "
     "'mnist1d'", None),
    ([CONFIG, W, "--config.total_steps=10", "--config.total_epochs=2"],
     "--config.total_steps and --config.total_epochs both set the run's length", None),
    # workdirs
    ([CONFIG, "--workdir={setup}"], "exists and is not a directory",
     lambda tmp: _file(tmp, "file", "keep me")),
    ([CONFIG, "--workdir=/proc/1/bigmodel_run"], "is not writable", None),
    ([CONFIG, W, "--config.batch_size=64"], "holds a run with a different config (seed)",
     lambda tmp: _old_run(tmp, seed=1, batch_size=64)),
    ([CONFIG, W], "config.json is unreadable",
     lambda tmp: (tmp / "w").mkdir() or (tmp / "w" / "config.json").write_text("{")),
    ([CONFIG, W, "--config.batch_size=64", "--config.init_from={setup}"],
     "init_from: no config.json in {tmp}/nothing_here: not a workdir",
     lambda tmp: str(tmp / "nothing_here")),
    ([CONFIG, "--workdir={tmp}/bad_name_\udcff"], "is not valid UTF-8", None),
    ([CONFIG, "--workdir=/proc/no_such_dir/run", "--config.batch_size=64"], "workdir /proc/no_such_dir/run cannot be created: "
     "No such file or directory (errno 2)", None),
    # every numeric key: negative, zero, NaN, infinite or beyond float32, where it cannot be
    ([CONFIG, W, "--config.seed=-1"], "seed must be an integer in [0, 2**63), got -1", None),
    ([CONFIG, W, f"--config.seed={2**64}"], "seed must be an integer in [0, 2**63)", None),
    ([CONFIG, W, "--config.optimizer.learning_rate=nan"],
     "optimizer.learning_rate must be a finite number >= 0, got nan", None),
    ([CONFIG, W, "--config.optimizer.learning_rate=-1.0"],
     "optimizer.learning_rate must be a finite number >= 0, got -1.0", None),
    ([CONFIG, W, "--config.optimizer.learning_rate=1e39"], "optimizer.learning_rate must be a finite",
     None),
    ([CONFIG, W, "--config.total_epochs=inf"], "total_epochs must be a finite number > 0, got inf",
     None),
    ([CONFIG, W, "--config.optimizer.momentum=-0.5"], "optimizer.momentum must be a number in [0, 1)",
     None),
    ([CONFIG, W, "--config.optimizer.b2=1.5"], "optimizer.b2 must be a number in [0, 1), got 1.5",
     None),
    ([CONFIG, W, "--config.optimizer.eps=-1.0"], "optimizer.eps must be a finite number >= 0", None),
    ([CONFIG, W, "--config.optimizer.weight_decay=nan"], "optimizer.weight_decay must be a finite",
     None),
    ([CONFIG, W, "--config.optimizer.grad_clip_norm=inf"], "optimizer.grad_clip_norm must be a finite",
     None),
    ([CONFIG, W, "--config.schedule.end_factor=-1.0"], "schedule.end_factor must be a finite number",
     None),
    ([CONFIG, W, "--config.schedule.boundaries=(0.75, 0.5)"],
     "schedule.boundaries must be increasing fractions in (0, 1)", None),
    ([CONFIG, W, "--config.schedule.decay_factor=0.0"], "schedule.decay_factor must be a finite "
     "number > 0, got 0.0", None),
    ([CONFIG, W, "--config.data.scale=0.0"], "data.scale must be a finite non-zero number", None),
    ([CONFIG, W, "--config.data.mean=(nan,)"], "data.mean must be a tuple of finite numbers", None),
    ([CONFIG, W, "--config.data.std=(0.0,)"], "data.std must be a tuple of finite numbers > 0", None),
    ([CONFIG, W, "--config.data.image_size=-1"], "data.image_size must be an integer >= 0", None),
    ([CONFIG, W, "--config.data.eval_crop=1.5"], "data.eval_crop must be a number in (0, 1], got 1.5",
     None),
    ([CONFIG, W, "--config.data.seq_len=0"], "data.seq_len must be a positive integer, got 0", None),
    ([CONFIG, W, "--config.task_features=0"], "task_features must be a positive integer, got 0", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.model.strides=0"], "model.strides must be a positive integer, got 0", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.model.channels=(0, 25, 25)"], "model.channels must be a positive integer",
     None),
    (["--config=configs/mnist1d.py:transformer", W, "--config.batch_size=64",
      "--config.model.dropout=1.5"], "model.dropout must be in [0, 1), got 1.5", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.model.padding=weird"],
     "model 'cnn' cannot be built for inputs of shape (40,)", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.mean=(0.5, 0.5)"],
     "data.mean has 2 values; inputs of data set 'mnist1d' have 40 channels", None),
    # string keys: unknown values, unicode
    ([CONFIG, W, "--config.data.kind=ünï"], "data.kind must be classification, lm, seq2seq or paired, got 'ünï'",
     None),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.kind=lm"],
     "data.kind=lm reads text, but feature 'x' of data set 'mnist1d' is Tensor", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.name=ünï"],
     "data set 'ünï' cannot be opened", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.name=mnist1d:9.9.9"],
     "data set 'mnist1d:9.9.9' cannot be opened", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.optimizer.name=ädam"],
     "unknown optimizer 'ädam'", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.sharding=ünï"], "unknown sharding preset 'ünï'",
     None),
    # objectives (configs/generative.py)
    ([GAN, W, "--config.data.kind=lm"], "objective 'gan' trains on data.kind classification, not 'lm'",
     None),
    (["--config={setup}", W], "objective 'gan' trains a discriminator with an optimizer of its own: "
     "set optimizers.discriminator", lambda tmp: _file(tmp, "gan.py", GAN_WITHOUT_SECOND_OPTIMIZER)),
    ([GAN, W, "--config.data.label_key="], "model.conditional=True needs labels, but data set "
     "'digits' is read without them", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.data.label_key="],
     "the classification objective needs labels", None),
    ([GAN, W, "--config.optimizers.discriminator.learning_rate=-1"],
     "optimizers.discriminator.learning_rate must be a finite number >= 0, got -1.0", None),
    ([GAN, W, "--config.objective.name=gam"], "unknown objective 'gam'; known: classification", None),
    ([GAN, W, "--config.objective.loss=wasserstein"],
     "objective.loss must be one of non_saturating, hinge, got 'wasserstein'", None),
    ([CONFIG, W, "--config.batch_size=64", "--config.objective.name=diffusion"],
     "objective 'diffusion' trains model 'unet', not 'cnn'", None),
    ([GAN, W, "--config.samples.judge={tmp}/nowhere"],
     "samples.judge={tmp}/nowhere is not a finished run's workdir", None),
    (["--config=configs/generative.py:ddpm", W, "--config.objective.sample_steps=0"],
     "objective.sample_steps must be in [1, timesteps=1000], got 0", None),
]


def _snapshot(root) -> dict[str, float]:
  return {str(p): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
  """Every BAD_INPUT case run as a command (in one batch: helpers.run_main_batch), each in a
  directory of its own: [(directory, its files before, (status, stdout, stderr))]."""
  cases = []
  for i, (args, _, setup) in enumerate(BAD_INPUT):
    tmp = tmp_path_factory.mktemp(f"bad{i}")
    value = setup(tmp) if setup else None
    cases.append((tmp, _snapshot(tmp), [a.format(tmp=tmp, setup=value) for a in args]))
  results = run_main_batch([argv for _, _, argv in cases])
  return [(tmp, before, result) for (tmp, before, _), result in zip(cases, results)]


@pytest.mark.parametrize("index, expected", [(i, case[1]) for i, case in enumerate(BAD_INPUT)],
                         ids=[f"{i}-{case[1][:30]}" for i, case in enumerate(BAD_INPUT)])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(bad_input_runs, index, expected):
  tmp, before, (status, _, stderr) = bad_input_runs[index]
  assert status == 2, stderr[-3000:]
  # First use of a data set may print its preparation before; the error itself is one line.
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "Traceback" not in stderr, stderr[-3000:]
  assert expected.format(tmp=tmp) in last, last
  assert _snapshot(tmp) == before


def test_the_bad_input_table_is_large():
  assert len(BAD_INPUT) >= 70


def test_the_run_length_given_on_the_command_line_wins(tmp_path):
  """An epoch-based config (digits: total_epochs=30) trains --config.total_steps=N steps when
  that is what the command line gives, and says which one counts."""
  from bigmodel_jax.cli import parse_config
  file = "configs/digits.py:mlp"
  assert parse_config(file, []).total_epochs == 30
  assert parse_config(file, ["--config.total_steps=40"]).total_epochs is None
  assert parse_config(file, ["--config.total_epochs=2"]).total_epochs == 2
  r = run_main(f"--config={file}", f"--workdir={tmp_path / 'w'}", "--config.total_steps=20",
               "--config.schedule.warmup_steps=5", "--config.log_every=10",
               "--config.eval_every=20", "--config.checkpoint_every=20", env=ONE_DEVICE)
  assert r.returncode == 0, r.stderr
  assert "20 steps (total_steps)" in r.stdout
  assert json.loads((tmp_path / "w" / "results.json").read_text())["step"] == 20


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

  from helpers import small_config

  from bigmodel_jax.trainer import train
  args = ["--config.total_steps=20", "--config.log_every=5", "--config.batch_size=64",
          "--config.eval_every=20"]
  proc = run_main(CONFIG, *args, f"--workdir={tmp_path / 'one'}",
                  env=ONE_DEVICE)
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
  # Sizing a model before its data set is here: shapes and classes from TFDS's metadata, nothing
  # downloaded or prepared (ImageNet needs a manual download).
  empty = tmp_path / "no_data_sets"
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.summary",
                         "--config=configs/imagenet2012.py:resnet18", "--json"], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "TFDS_DATA_DIR": str(empty)})
  assert proc.returncode == 0, proc.stderr
  summary = json.loads(proc.stdout)
  assert summary["num_params"] == 11_689_512  # torchvision's resnet18
  assert summary["input_shape"] == [224, 224, 3] and summary["num_outputs"] == 1000
  assert not empty.exists()
