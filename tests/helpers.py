"""What tests share: the repo's path, running the commands, small configs, first losses, kill
and resume, the fake cluster's records. (Fixtures are in conftest.py, which also sets up the
8 fake devices before jax is imported.)"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# For subprocesses that run on one device (resume and single-device reference runs).
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


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


def first_losses(c, devices=None, count: int = 3, total_steps: int = 100):
  """(the first `count` train losses, the state after them) of config c on `devices` (None:
  all 8), each step jitted over c's mesh plan as the trainer does; the learning-rate schedule
  `total_steps` long."""
  from bigmodel_jax.trainer import build, sharding, steps
  from bigmodel_jax.data import pipeline
  sources = pipeline.load(c.data)
  b = build.build(c, build.example_of(sources.train), sources.num_outputs, total_steps,
                  devices=devices)
  state, shardings = b.create_state(c.seed)
  step = steps.jit_train_step(b.plan, shardings, **b.step_options)
  iterator = pipeline.train_iterator(sources.train, c.batch_size, c.seed)
  losses = []
  for _ in range(count):
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


def generative_config(arg: str, judge: str, **overrides):
  """configs/generative.py:ARG shrunk for tests: 10 samples per class scored by `judge`."""
  c = small_config(arg, "generative", **overrides)
  c.samples.judge, c.samples.per_class = judge, 10
  return c


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
