"""Test setup: 8 fake CPU devices and a private TFDS data dir, before anything imports jax.

Subprocesses started by tests inherit both through the environment.
"""

import os
import sys
import tempfile

# XLA:CPU aborts the process when the 8 devices' threads do not all reach a collective within
# 40 s; on 2 cores shared with the other test worker's compiles that happens now and then (a
# training test aborted in an eval's all-reduce), so the tests give the rendezvous 10 minutes.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_cpu_collective_call_terminate_timeout_seconds=600").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
# Offline data sets are prepared once per test session, exercising the first-use path.
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="bigmodel_tfds_"))
# Sample judges (bigmodel_jax/trainer/judge.py) trained on first use go here, not to ~/.cache.
os.environ.setdefault("BIGMODEL_JAX_CACHE", tempfile.mkdtemp(prefix="bigmodel_cache_"))
# JAX's persistent compilation cache, one per test session: the many processes that the resume,
# fault and launcher tests start compile the same programs (half of a small run's 5 s). Every
# compiled program is kept (no minimum compile time). A process killed while writing an entry
# leaves it short; JAX then warns and compiles again.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="bigmodel_jax_cc_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# For subprocesses that run on one device (resume and single-device reference runs).
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


# Test files, slowest first (seconds of a worker on a 2-core CPU, 2026-12-03, issue 34: 124,
# 119, 119, 116, ...). pytest-xdist hands whole files to its two workers in the collection order
# (--no-loadscope-reorder, pyproject.toml), so sorting it this way keeps a long file from
# starting while the other worker is about to finish; files not listed go last.
SLOWEST_FIRST = (
    "test_transformer.py", "test_parallel.py", "test_moe.py", "test_multihost.py",
    "test_bucket.py", "test_corpus.py", "test_faults.py", "test_compression.py", "test_gan.py", "test_convert.py",
    "test_pipeline.py", "test_convnets.py", "test_multimodal.py", "test_train.py", "test_main.py",
    "test_sample.py", "test_launch.py", "test_contrastive.py", "test_text.py", "test_seq2seq.py",
    "test_image_folder.py",
    "test_generative.py", "test_sweep.py", "test_recurrent.py", "test_multitask.py",
    "test_images.py", "test_steps_per_call.py", "test_dry_run.py", "test_flops.py",
    "test_data.py", "test_runs.py", "test_models.py", "test_optim.py", "test_docs.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a file as is


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, "tests expect 8 fake CPU devices; is jax imported before conftest?"


@pytest.fixture(scope="session")
def gcs() -> dict:
  """A local Cloud Storage (tests/gcs_emulator.py: gcp-storage-emulator, in memory, on a free
  port) holding the bucket "bucket"; the environment that points clients at it."""
  import subprocess
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "tests", "gcs_emulator.py"),
                           "--bucket=bucket"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)  # clients killed mid-request
  ready = proc.stdout.readline().split()
  assert ready[:1] == ["ready"], f"the emulator did not start: {ready}"
  yield {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{ready[1]}"}
  proc.kill()
  proc.wait()


def run_main(*args: str, env: dict | None = None, timeout: float = 300,
             module: str = "bigmodel_jax.main"):
  """Runs `python -m MODULE ARGS` from the repo root; returns the CompletedProcess."""
  import subprocess
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


def run_main_batch(arg_lists: list[list[str]], timeout: int = 120,
                   command: str = "main") -> list[tuple[int, str, str]]:
  """run_main for many argument lists of one command (main, convert, predict, ...) at once
  (tests/main_batch.py: one interpreter, a forked child per list, run in order):
  [(exit status, stdout, stderr), ...] in their order."""
  import json
  import subprocess
  proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "main_batch.py")], cwd=REPO,
                        input=json.dumps([[command, *a] for a in arg_lists]),
                        capture_output=True, text=True,
                        timeout=timeout * len(arg_lists),
                        env={**os.environ, "MAIN_BATCH_TIMEOUT": str(timeout)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  return [tuple(r) for r in json.loads(proc.stdout)]


def first_losses(c, devices=None, count: int = 3):
  """(the first `count` train losses, the state after them) of config c on `devices` (None:
  all 8), each step jitted over c's mesh plan as the trainer does."""
  from bigmodel_jax.trainer import build, sharding, steps
  from bigmodel_jax.data import pipeline
  sources = pipeline.load(c.data)
  b = build.build(c, build.example_of(sources.train), sources.num_outputs, 100, devices=devices)
  state, shardings = b.create_state(c.seed)
  step = steps.jit_train_step(b.plan, shardings, **b.step_options)
  iterator = pipeline.train_iterator(sources.train, c.batch_size, c.seed)
  losses = []
  for _ in range(count):
    with b.plan.activation_context():
      state, metrics = step(state, sharding.global_batch(next(iterator), b.plan.batch_sharding))
    losses.append(float(metrics["loss"]))
  return losses, state


def kill_and_resume(args: list[str], tmp_path, max_delay: float, seed: int = 20261130,
                    env: dict | None = None):
  """Runs `main ARGS` to the end (reference), and again SIGKILLed at a random moment after its
  first checkpoint, then rerun to the end; returns both results.json (killed, reference). env:
  added to each process's environment."""
  import json
  import random
  import signal
  import subprocess
  import time
  reference = run_main(*args, f"--workdir={tmp_path / 'reference'}", env=env)
  assert reference.returncode == 0, reference.stderr
  workdir = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "bigmodel_jax.main", *args, f"--workdir={workdir}"],
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})
  ckpts = workdir / "checkpoints"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None and not (
      ckpts.is_dir() and any(n.isdigit() for n in os.listdir(ckpts))):
    time.sleep(0.01)
  time.sleep(random.Random(seed).uniform(0.0, max_delay))
  assert proc.poll() is None, "finished before the kill"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  rerun = run_main(*args, f"--workdir={workdir}", env=env)
  assert rerun.returncode == 0, rerun.stderr
  return tuple(json.loads((d / "results.json").read_text()) for d in (workdir, tmp_path / "reference"))


def small_config(arg: str = "cnn", file: str = "mnist1d", **overrides):
  """A config from configs/FILE.py:ARG with overrides (dotted keys), for quick runs."""
  from bigmodel_jax.config import load_config_file
  c = load_config_file(os.path.join(REPO, "configs", f"{file}.py:{arg}"))
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def train_losses(workdir) -> list[float]:
  """The train/loss column of WORKDIR/metrics.jsonl."""
  import json
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [row["train/loss"] for row in map(json.loads, f) if "train/loss" in row]


@pytest.fixture(scope="session")
def digits_judge(tmp_path_factory) -> str:
  """A small classifier of the digits (configs/digits.py:mlp, ~98% test accuracy) to score
  generative models' samples in tests (samples.judge) instead of the pinned CNN. Trained on one
  device in a process of its own (nothing in it is under test)."""
  import json
  workdir = tmp_path_factory.mktemp("digits_judge")
  proc = run_main("--config=configs/digits.py:mlp", f"--workdir={workdir}",
                  env=ONE_DEVICE)
  assert proc.returncode == 0, proc.stderr
  assert json.loads((workdir / "results.json").read_text())["eval/accuracy"] > 0.9
  return str(workdir)


def generative_config(arg: str, judge: str, **overrides):
  """configs/generative.py:ARG shrunk for tests: 10 samples per class scored by `judge`."""
  c = small_config(arg, "generative", **overrides)
  c.samples.judge, c.samples.per_class = judge, 10
  return c


@pytest.fixture
def fake_cluster(tmp_path):
  """gcloud, sbatch, srun, scontrol and scancel stand-ins first on PATH (tests/fakes/); returns
  the environment for the launcher and the folder where they record their calls and jobs."""
  sys.path.insert(0, os.path.join(REPO, "tests", "fakes"))
  try:
    import fake_cluster
  finally:
    sys.path.pop(0)
  state = tmp_path / "cluster"
  fake_cluster.install(str(tmp_path / "bin"))
  home = tmp_path / "tpu_home"  # the TPU workers' home: the checkout is ~/bigmodel_jax there
  home.mkdir()
  (home / "bigmodel_jax").symlink_to(REPO)
  env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
         "FAKE_CLUSTER_DIR": str(state), "FAKE_TPU_HOME": str(home), "FAKE_SLURM_QUEUE_S": "0.2"}
  return env, state


def cluster_calls(state) -> list[dict]:
  """The fake cluster commands called so far, in order."""
  import json
  path = state / "calls.jsonl"
  return [json.loads(line) for line in open(path)] if path.exists() else []


def wait_for_job(state, job: str, timeout: float = 240) -> dict:
  """The fake SLURM job's record once it has ended: {"statuses": [...]}."""
  import json
  import time
  path = state / "jobs" / f"{job}.done"
  end = time.time() + timeout
  while not path.exists():
    assert time.time() < end, f"fake job {job} did not end in {timeout} s"
    time.sleep(0.2)
  return json.loads(path.read_text())


def documented_commands(text: str) -> list[list[str]]:
  """The `python -m bigmodel_jax.X ...` commands in a README, WORKSPACE.md or docstring, as
  argument lists from the module on (`bigmodel_jax.X`, args...): backslash continuations
  joined, a trailing # comment dropped, and the closing quote of a command quoted inside
  another (gcloud ... --command="... python -m ...") too."""
  import re
  import shlex
  text = text.replace("\\\n", " ")
  found = re.findall(r"(?:\.venv/bin/)?python3? -m (bigmodel_jax[\w.]*)([^\n`]*)", text)
  return [[module, *shlex.split(rest.rstrip() if rest.count('"') % 2 == 0 else
                                rest.rstrip().removesuffix('"'), comments=True)]
          for module, rest in found]
