"""Test setup: 8 fake CPU devices and a private TFDS data dir, before anything imports jax.

Subprocesses started by tests inherit both through the environment.
"""

import os
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ["JAX_PLATFORMS"] = "cpu"
# Offline data sets are prepared once per test session, exercising the first-use path.
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="bigmodel_tfds_"))

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def _eight_devices():
  assert jax.device_count() == 8, "tests expect 8 fake CPU devices; is jax imported before conftest?"


def run_main(*args: str, env: dict | None = None, timeout: float = 300):
  """Runs `python -m bigmodel_jax.main ARGS` from the repo root; returns the CompletedProcess."""
  import subprocess
  return subprocess.run([sys.executable, "-m", "bigmodel_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


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
