"""The launch scripts end to end, without a cloud: `launch/tpu_vm.sh` through a fake `gcloud`
whose workers are local processes with their own home, and `launch/slurm.sbatch` through a fake
`sbatch`/`srun`/`scontrol`/`scancel` (tests/fakes/fake_cluster.py), preempted and requeued."""

import json
import os
import subprocess
import time

from helpers import REPO, cluster_calls, wait_for_job

from bigmodel_jax import storage

# Each process sees 2 CPU devices (not the suite's 8): 2 processes make a mesh of 4.
DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
RUN = ["--config.total_steps=40", "--config.batch_size=64", "--config.log_every=10",
       "--config.eval_every=40", "--config.checkpoint_every=10"]


def test_tpu_vm_script_runs_on_every_worker_from_the_workers_home(fake_cluster, tmp_path, gcs,
                                                                  monkeypatch):
  # The workers share no disk: the run lives in a bucket (RUNS_ROOT + a plain name).
  env, state = fake_cluster
  root = f"gs://bucket/{tmp_path.name}/runs"
  unset = subprocess.run(["launch/tpu_vm.sh", "v5e-8", "us-west4-a", "configs/mnist1d.py:cnn",
                          "run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert unset.returncode == 2 and "set RUNS_ROOT" in unset.stderr
  proc = subprocess.run(["launch/tpu_vm.sh", "v5e-8", "us-west4-a", "configs/mnist1d.py:cnn",
                         "run", *RUN], cwd=REPO,
                        env={**env, **DEVICES, **gcs, "FAKE_TPU_WORKERS": "2", "RUNS_ROOT": root},
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for k, v in gcs.items():
    monkeypatch.setenv(k, v)
  (call,) = cluster_calls(state)
  assert call["argv"][:7] == ["compute", "tpus", "tpu-vm", "ssh", "v5e-8", "--zone=us-west4-a",
                              "--worker=all"]
  # ~ is expanded by the worker's shell (its home), not on the machine that launches
  assert call["argv"][7].startswith("--command=cd ~/bigmodel_jax && .venv/bin/python -m "
                                    "bigmodel_jax.main --config=configs/mnist1d.py:cnn"), call
  results = json.loads(storage.read_text(f"{root}/run/results.json"))
  assert results["step"] == 40 and results["params_sha256"] is None  # 2 processes: not addressable
  assert "on 4 devices" in proc.stdout  # 2 workers x 2 CPU devices: one jax.distributed run


def test_slurm_script_runs_is_preempted_requeues_itself_and_resumes(fake_cluster, tmp_path):
  env, state = fake_cluster
  workdir = tmp_path / "run"
  steps = ["--config.total_steps=200", "--config.batch_size=64", "--config.log_every=10",
           "--config.eval_every=200", "--config.checkpoint_every=20"]
  submitted = subprocess.run(["sbatch", "--ntasks-per-node=2", "launch/slurm.sbatch",
                              "configs/mnist1d.py:cnn", str(workdir), *steps], cwd=REPO,
                             env={**env, **DEVICES},
                             capture_output=True, text=True, timeout=60)
  assert submitted.returncode == 0, submitted.stderr
  job = submitted.stdout.split()[-1]
  end = time.time() + 240  # the job runs; once it has a checkpoint, SLURM's --signal=TERM
  while not os.path.isdir(workdir / "checkpoints" / "20"):
    assert time.time() < end and not (state / "jobs" / f"{job}.done").exists(), (
        (state / "jobs" / f"{job}.log").read_text()[-3000:])
    time.sleep(0.1)
  assert subprocess.run(["scancel", "--signal=TERM", job], env=env).returncode == 0
  record = wait_for_job(state, job)
  log = (state / "jobs" / f"{job}.log").read_text()
  assert record["statuses"] == [75, 0], log[-3000:]  # preempted and saved, then finished
  assert f"preempted; requeueing job {job}" in log
  assert ["requeue", job] in [c["argv"] for c in cluster_calls(state) if c["command"] == "scontrol"]
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 200 and 20 <= results["start_step"] < 200
  assert "on 4 devices" in log  # srun started 2 tasks that joined through SLURM's variables
