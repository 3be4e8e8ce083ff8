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

from helpers import ONE_DEVICE, REPO, run_main  # noqa: E402


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
