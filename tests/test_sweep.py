"""Sweeps and reports as a user types them: a small sweep run 2 at a time, rerun (finished points
skipped), a failing point reported without stopping the others, the SLURM job script and TPU
commands written out, and the report's tables and plots."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, cluster_calls, wait_for_job

from bigmodel_jax import report
from bigmodel_jax.experiments import reports, sweeps

TINY = ["--config.total_steps=12", "--config.batch_size=64", "--config.log_every=4",
        "--config.eval_every=12", "--config.checkpoint_every=12"]


def _sweep_file(tmp_path, points: str) -> str:
  path = tmp_path / "sweep_config.py"
  path.write_text(f'''"""python -m bigmodel_jax.main --config={path} (a test sweep)"""
from bigmodel_jax.experiments import sweeps
from bigmodel_jax.config import load_config_file

def get_config(arg="cnn"):
  return load_config_file({os.path.join(REPO, "configs", "mnist1d.py")!r} + ":" + arg)

def get_sweep(arg="cnn"):
  return {points}
''')
  return f"{path}:cnn"


def _run(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "bigmodel_jax.sweep", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_helpers_build_products_zips_and_names():
  assert sweeps.product({"a": [1, 2], "seed": [0, 1]}) == [
      {"a": 1, "seed": 0}, {"a": 1, "seed": 1}, {"a": 2, "seed": 0}, {"a": 2, "seed": 1}]
  assert sweeps.zipped({"model.dim": [64, 128], "lr": [0.01, 0.005]}) == [
      {"model.dim": 64, "lr": 0.01}, {"model.dim": 128, "lr": 0.005}]
  with pytest.raises(ValueError, match="different lengths"):
    sweeps.zipped({"a": [1, 2], "b": [1]})
  assert len(sweeps.cross(sweeps.zipped({"a": [1, 2]}), sweeps.product({"seed": [0, 1, 2]}))) == 6
  assert sweeps.point_name({"optimizer.learning_rate": 0.01, "model.channels": (8, 8), "seed": 1}) == (
      "optimizer.learning_rate=0.01,model.channels=_8,_8_,seed=1")
  assert sweeps.value_text((0.5,)) == "(0.5,)" and sweeps.value_text("cosine") == "cosine"


def test_sweep_runs_points_in_parallel_reports_a_failure_and_a_rerun_skips_finished(tmp_path):
  spec = _sweep_file(tmp_path, 'sweeps.product({"seed": [0, 1]}) + [{"seed": 2, "model.name": "nope"}]')
  root = tmp_path / "root"
  proc = _run(f"--config={spec}", f"--root={root}", "--parallel=2", *TINY)
  assert proc.returncode == 1, proc.stderr
  assert "3 points, 0 finished already, 3 to run (2 at a time)" in proc.stdout
  assert "done seed=0" in proc.stdout and "done seed=1" in proc.stdout
  assert "FAILED seed=2,model.name=nope (exit 2): error: unknown model 'nope'" in proc.stdout
  assert all((root / f"seed={s}" / "results.json").exists() for s in (0, 1))
  with open(root / "sweep.json") as f:
    listed = json.load(f)
  assert [p["name"] for p in listed["points"]] == ["seed=0", "seed=1", "seed=2,model.name=nope"]
  assert "--config.seed=1" in listed["points"][1]["command"]

  rerun = _run(f"--config={spec}", f"--root={root}", *TINY)
  assert "3 points, 2 finished already, 1 to run" in rerun.stdout and rerun.returncode == 1

  # The report, while one run is still going (a copy without results.json, its last row at 4).
  running = root / "seed=3"
  shutil.copytree(root / "seed=0", running)
  os.remove(running / "results.json")
  with open(running / "config.json") as f:
    config = json.load(f)
  config["seed"] = 3
  (running / "config.json").write_text(json.dumps(config))
  (running / "metrics.jsonl").write_text((root / "seed=0" / "metrics.jsonl").read_text().splitlines()[0] + "\n")
  report.main([str(root)])
  text = (root / "report.md").read_text()
  accuracies = [json.load(open(root / f"seed={s}" / "results.json"))["eval/accuracy"] for s in (0, 1)]
  expected = f"{np.mean(accuracies):.4f} ± {np.std(accuracies, ddof=1):.4f}"
  assert "# Report: 2 of 3 runs finished" in text
  assert f"| 2/3 | {expected} |" in text, text
  assert "- seed=3: step 4 of 12" in text
  assert expected.replace(" ± ", r" \pm ") in (root / "report.tex").read_text()
  rows = (root / "report.csv").read_text().splitlines()
  assert rows[0].startswith("seeds,runs,eval/accuracy_mean,eval/accuracy_std") and len(rows) == 2
  for name in ("curves_train_loss.png", "curves_eval_accuracy.png"):
    assert (root / name).stat().st_size > 1000


def test_dry_run_lists_points_and_their_commands(tmp_path):
  spec = _sweep_file(tmp_path, 'sweeps.product({"optimizer.learning_rate": [0.01, 0.03], "seed": [0, 1]})')
  root = tmp_path / "root"
  proc = _run(f"--config={spec}", f"--root={root}", "--dry_run", "--config.total_steps=5")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count("[to run]") == 4 and not root.exists()
  assert (f"--workdir={root}/optimizer.learning_rate=0.03,seed=1 --config.total_steps=5 "
          "--config.optimizer.learning_rate=0.03 --config.seed=1") in proc.stdout
  bad = _run(f"--config={spec}", f"--root={root}", "--launcher=tpu")
  assert bad.returncode == 2 and bad.stderr.strip() == (
      "error: --launcher=tpu needs --tpu_name and --tpu_zone")


def test_a_bad_point_or_root_stops_the_sweep_before_anything_is_written(tmp_path):
  spec = _sweep_file(tmp_path, 'sweeps.product({"seed": [0, 1]}) + [{"seed": 2, '
                               '"optimizer.learning_rate": -1.0}]')
  root = tmp_path / "root"
  for args, error in [(["--config.nope=1"], "point seed=0: unknown config key 'nope'"),
                      ([], "point seed=2,optimizer.learning_rate=-1.0: optimizer.learning_rate "
                           "must be a finite number >= 0, got -1.0"),
                      (["--dry_run"], "point seed=2,optimizer.learning_rate=-1.0"),
                      (["--launcher=tpu", "--tpu_name=t", "--tpu_zone=z"], "point seed=2")]:
    bad = _run(f"--config={spec}", f"--root={root}", *args)
    assert bad.returncode == 2 and bad.stdout == "", (args, bad.stdout, bad.stderr)
    assert bad.stderr.strip().startswith(f"error: {error}"), (args, bad.stderr)
    assert not root.exists()
  (tmp_path / "file").write_text("")
  bad = _run(f"--config={spec}", f"--root={tmp_path / 'file'}")
  assert bad.returncode == 2 and bad.stderr.strip() == (
      f"error: --root {tmp_path / 'file'} exists and is not a directory")


def test_report_refuses_a_metric_no_run_logged(tmp_path):
  run = tmp_path / "seed=0"
  run.mkdir()
  (run / "config.json").write_text(json.dumps({"seed": 0}))
  (run / "results.json").write_text(json.dumps({"eval/accuracy": 0.9}))
  (tmp_path / "report.md").write_text("an earlier report")
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.report", str(tmp_path),
                         "--metrics=eval/accuracy,eval/nope"], cwd=REPO, capture_output=True,
                        text=True)
  assert proc.returncode == 2 and proc.stderr.strip() == (
      f"error: --metrics: no run under {tmp_path} logged eval/nope; its metrics: eval/accuracy")
  assert (tmp_path / "report.md").read_text() == "an earlier report"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "seed=0"]


def test_slurm_sweep_submits_the_job_array_its_dry_run_writes(tmp_path, fake_cluster):
  """Through a fake sbatch that runs the job array here (tests/fakes/fake_cluster.py)."""
  env, state = fake_cluster
  spec = _sweep_file(tmp_path, 'sweeps.product({"seed": [0, 1]})')
  root = tmp_path / "root"
  args = [f"--config={spec}", f"--root={root}", "--launcher=slurm", "--parallel=2", *TINY]
  dry = subprocess.run([sys.executable, "-m", "bigmodel_jax.sweep", *args, "--dry_run"], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env=env)
  assert dry.returncode == 0 and not cluster_calls(state), dry.stderr
  written = (root / "sweep.sbatch").read_text()
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.sweep", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode == 0, proc.stderr
  # one submission (the suite once saw a second fake-cluster call here, on a loaded machine:
  # submitit asking about its jobs; the record of it was gone before I could read it)
  (call,) = [c for c in cluster_calls(state) if c["command"] == "sbatch"]
  job = proc.stdout.split("submitted 2 jobs: ")[1].split("_")[0]
  assert wait_for_job(state, job)["statuses"] == [0, 0]
  for seed in (0, 1):
    assert json.loads((root / f"seed={seed}" / "results.json").read_text())["step"] == 12
  # What --dry_run wrote is what was submitted: the same job array and options.
  directives = lambda text: [l for l in text.splitlines() if l.startswith("#SBATCH")]  # noqa: E731
  submitted = open(call["argv"][-1]).read()
  assert directives(submitted) == directives(written) and "#SBATCH --array=0-1%2" in written


def test_tpu_sweep_runs_each_point_on_the_workers(tmp_path, fake_cluster):
  """--tpu_run through a fake gcloud whose worker runs the command in its own home, where the
  checkout is ~/bigmodel_jax (a ~ expanded on this machine would miss it)."""
  env, state = fake_cluster
  spec = _sweep_file(tmp_path, '[{"seed": 4}]')
  root = tmp_path / "root"
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.sweep", f"--config={spec}",
                         f"--root={root}", "--launcher=tpu", "--tpu_name=v5e-8",
                         "--tpu_zone=us-west4-a", "--tpu_run", *TINY], cwd=REPO,
                        capture_output=True, text=True, timeout=300, env=env)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  (call,) = cluster_calls(state)
  assert call["command"] == "gcloud" and "--distributed" in call["argv"][-1]
  assert json.loads((root / "seed=4" / "results.json").read_text())["step"] == 12


def test_submitit_jobs_run_a_point(tmp_path):
  spec = _sweep_file(tmp_path, '[{"seed": 5}]')
  root = tmp_path / "root"
  proc = _run(f"--config={spec}", f"--root={root}", "--launcher=submitit_local", *TINY)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "done seed=5" in proc.stdout and (root / "seed=5" / "results.json").exists()


def test_power_law_fit_recovers_the_exponent(tmp_path):
  for n in (1e4, 1e5, 1e6, 1e7):
    d = tmp_path / f"n{n:g}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model": {"dim": int(n)}, "seed": 0}))
    (d / "results.json").write_text(json.dumps({"num_params": n, "eval/loss": 5.0 * n ** -0.1}))
  s = reports.summarize(reports.find_runs(str(tmp_path)), ["eval/loss"])
  fit = reports.power_law(s, "num_params", "eval/loss", str(tmp_path))
  assert fit["b"] == pytest.approx(-0.1, abs=1e-9) and fit["a"] == pytest.approx(5.0, rel=1e-9)
  assert (tmp_path / "power_law.png").exists()
