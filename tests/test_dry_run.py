"""--dry_run: compile the step for the configured mesh without data, report per-device memory."""

from bigmodel_jax.trainer import planning
from helpers import run_main, small_config


def test_plan_reports_state_bytes_from_the_shardings():
  c = small_config("transformer", "pycode")
  dp = planning.dry_run(c)
  c.sharding = "fsdp"
  fsdp = planning.dry_run(c)
  assert dp["devices"] == fsdp["devices"] == 8 and fsdp["mesh"] == {"fsdp": 8}
  full = dp["params_bytes"] + dp["opt_state_bytes"]
  assert full == 3 * 4 * dp["num_params"] + 4 * 2  # params + Adam's mu, nu (float32) + 2 counts
  # biases and norms (< 1024 values) stay whole: 6% over an eighth for this 826k model
  assert 1 / 8 <= (fsdp["params_bytes"] + fsdp["opt_state_bytes"]) / full < 1 / 8 * 1.1
  assert dp["peak_bytes"] > full and dp["flops_per_step_per_device"] > 0
  c.sharding, c.data.packing = "dp", True  # packed windows: {"tokens", "segment_ids", "positions"}
  packed = planning.dry_run(c)
  assert packed["num_params"] == dp["num_params"] and packed["flops_per_step_per_device"] > 0


def test_plans_a_mesh_larger_than_the_machine_and_checks_a_budget(tmp_path):
  args = ["--config=configs/mnist1d.py:cnn", "--config.batch_size=64", "--config.sharding=fsdp",
          "--dry_run", "--dry_run_devices=32"]
  fits = run_main(*args, "--memory_budget_gb=4")
  assert fits.returncode == 0, fits.stderr
  assert "mesh {'fsdp': 32} on 32 cpu devices" in fits.stdout and "fits in a budget" in fits.stdout
  too_small = run_main(*args, "--memory_budget_gb=0.000001")
  assert too_small.returncode == 1 and "does NOT fit" in too_small.stdout
  bad = run_main(*args[:-1], "--dry_run_devices=24")  # 64 does not divide over 24 devices
  assert bad.returncode == 2 and "batch_size=64 does not divide" in bad.stderr
