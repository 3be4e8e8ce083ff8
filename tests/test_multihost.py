"""Multi-host and elastic resume, with real processes: 2 processes of 4 CPU devices joined by
jax.distributed (gloo collectives) match 1 process of 8; a checkpoint written on 8 devices
resumes on 4 and on 1 with the same global batch and data order."""

import os
import shutil
import socket
import subprocess
import sys

import numpy as np
from conftest import REPO, run_main, train_losses

RTOL = 2e-5  # float reduction order differs between device counts (see test_parallel.py)
ARGS = ["--config=configs/mnist1d.py:cnn", "--config.batch_size=64", "--config.log_every=1",
        "--config.eval_every=1000", "--config.checkpoint_every=5",
        "--config.schedule.name=constant"]  # the first leg runs 5 of 10 steps: same learning rates


def _devices(n: int) -> dict:
  return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(workdir, steps: int, *extra: str) -> None:
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "bigmodel_jax.main", *ARGS, f"--config.total_steps={steps}",
       f"--workdir={workdir}", f"--coordinator_address=localhost:{port}", "--num_processes=2",
       f"--process_id={i}", *extra],
      cwd=REPO, env={**os.environ, **_devices(4)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "mesh {'data': 8} on 8 devices" in outs[0][0]  # process 0 reports the global mesh
  assert "Model" not in outs[1][0] and "Done" not in outs[1][0]  # the others stay quiet


def test_two_processes_train_checkpoint_resume_and_match_one_process(tmp_path):
  one = tmp_path / "one"
  proc = run_main(*ARGS, "--config.total_steps=10", f"--workdir={one}", env=_devices(8))
  assert proc.returncode == 0, proc.stderr
  two = tmp_path / "two"
  _two_processes(two, 5)
  _two_processes(two, 10)  # resumes from step 5 (total_steps may change on resume)
  assert sorted(os.listdir(two / "checkpoints")) == ["10", "5"]
  np.testing.assert_allclose(train_losses(two), train_losses(one), rtol=RTOL)


def test_a_checkpoint_from_eight_devices_resumes_on_four_and_on_one(tmp_path):
  reference = tmp_path / "reference"
  assert run_main(*ARGS, "--config.total_steps=10", f"--workdir={reference}",
                  env=_devices(8)).returncode == 0
  first = tmp_path / "first"
  assert run_main(*ARGS, "--config.total_steps=5", f"--workdir={first}",
                  env=_devices(8)).returncode == 0
  for n in (4, 1):
    workdir = tmp_path / f"on{n}"
    shutil.copytree(first, workdir)
    proc = run_main(*ARGS, "--config.total_steps=10", f"--workdir={workdir}", env=_devices(n))
    assert proc.returncode == 0, proc.stderr
    assert "Resumed from the checkpoint at step 5" in proc.stdout
    assert f"on {n} devices" in proc.stdout
    np.testing.assert_allclose(train_losses(workdir), train_losses(reference), rtol=RTOL)
