"""steps_per_call: K updates per jitted call give the same run as one per call (bit for bit, host-fed
or sampled on the device), including runs that start or end off a multiple of K, resumes with
another K, the NaN guard's step numbers, and refusals of cadences that K does not divide."""

import json
import os

import numpy as np
import pytest
from helpers import run_main, small_config

from bigmodel_jax.faults import ConfigError
from bigmodel_jax.trainer import train


TIMINGS = ("train/steps_per_sec", "train/input_wait_fraction",  # differ between runs
           "train/checkpoint_wait_s")


def _config(steps=37, **overrides):
  # 37 = 9 calls of 4 and a single step; every cadence a multiple of 2 and of 4 (K is kept
  # small: the CPU unrolls K steps, and compilation grows with K). A constant learning
  # rate, so that a first leg of 23 steps has the same rates as the 37-step run it resumes into.
  base = dict(total_steps=steps, log_every=8, eval_every=16, checkpoint_every=16, batch_size=64,
              eval_batch_size=512, **{"schedule.name": "constant"})
  return small_config("cnn", **{**base, **overrides})


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
            for line in f]


@pytest.fixture(scope="module")
def one_per_call(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("k1"))
  return workdir, train.train_and_evaluate(_config(), workdir)


@pytest.mark.parametrize("on_device", [False, True])
def test_four_steps_per_call_give_the_same_run_bit_for_bit(one_per_call, tmp_path, on_device):
  reference_dir, reference = one_per_call
  results = train.train_and_evaluate(
      _config(steps_per_call=4, **{"data.on_device": on_device}), str(tmp_path))
  assert results["params_sha256"] == reference["params_sha256"]
  # the same log lines: per-interval means over the same steps, evaluations at the same steps
  assert _rows(str(tmp_path)) == _rows(reference_dir)
  assert [r["step"] for r in _rows(str(tmp_path))] == [8, 16, 24, 32, 37]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["16", "32", "37"]


def test_resuming_off_a_multiple_of_k_and_with_another_k_is_exact(one_per_call, tmp_path):
  _, reference = one_per_call
  # 23 steps (11 calls of 2, 1 single step); the rerun resumes at 23 with K=4: a single step to
  # 24, calls of 4 to 36, a single step to 37. steps_per_call may change on resume.
  train.train_and_evaluate(_config(steps=23, steps_per_call=2), str(tmp_path))
  resumed = train.train_and_evaluate(_config(steps_per_call=4), str(tmp_path))
  assert resumed["start_step"] == 23
  assert resumed["params_sha256"] == reference["params_sha256"]


def test_a_nonfinite_step_inside_a_call_is_named(tmp_path):
  # The learning rate jumps by 1e30 after step 20 (as in test_faults.py): step 22's loss is the
  # first non-finite one, in the middle of the call that makes steps 21-24.
  c = _config(steps=40, steps_per_call=4, log_every=4, checkpoint_every=4,
              **{"schedule.name": "step"})
  c.schedule.boundaries, c.schedule.decay_factor = (0.5,), 1e30
  with pytest.raises(Exception, match="non-finite loss, gradients or update at step 22;.*last good "
                     "checkpoint is step 20"):
    train.train_and_evaluate(c, str(tmp_path))


@pytest.mark.parametrize("overrides, message", [
    ({"steps_per_call": 3}, "steps_per_call=3 must divide log_every=8, eval_every=16, "
                            "checkpoint_every=16: logs, evaluations and checkpoints happen between calls"),
    ({"steps_per_call": 0}, "steps_per_call must be a positive integer, got 0"),
    ({"steps_per_call": 5, "parallel.strategy": "pmap"}, "steps_per_call > 1 needs parallel.strategy=jit"),
])
def test_cadences_k_does_not_divide_are_refused(tmp_path, overrides, message):
  with pytest.raises(ConfigError, match=f"^{message}$"):
    train.train_and_evaluate(_config(**overrides), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_command_line_refusal_is_one_line_and_exit_2(tmp_path):
  proc = run_main("--config=configs/mnist1d.py:cnn", "--config.steps_per_call=7",
                  f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("error: steps_per_call=7 must divide log_every=200")
  assert not (tmp_path / "w").exists()


def test_the_reference_run_learns(one_per_call):
  # Not vacuous: the reference run learns (its log lines differ from step to step).
  reference_dir, _ = one_per_call
  losses = [r["train/loss"] for r in _rows(reference_dir) if "train/loss" in r]
  assert len(set(losses)) == len(losses) and np.all(np.isfinite(losses))


def test_a_rolled_loop_makes_the_same_updates_as_the_unrolled_steps():
  # GPUs and TPUs run the K updates as a lax.scan loop (CPUs unroll them): the same updates, up
  # to float rounding (XLA fuses a loop body differently from unrolled steps).
  import functools

  import jax

  from bigmodel_jax.trainer import build as build_lib, steps
  from bigmodel_jax.data import on_device, tasks
  c = _config()
  sources = tasks.load(c)
  b = build_lib.build(c, build_lib.example_of(sources.train), sources.num_outputs, 100)
  plan = b.plan
  data = on_device.DeviceData(sources.train, c.batch_size, c.seed, plan.mesh, steps_per_call=4)
  sample = functools.partial(on_device.sample, global_batch=c.batch_size)
  params = []
  for unroll in (True, False):
    state, shardings = b.create_state(c.seed)
    call = steps.jit_train_step(plan, shardings, sample=sample, steps_per_call=4, unroll=unroll,
                                **b.step_options)
    for done in range(0, 12, 4):
      state, metrics = call(state, data.inputs(done))
    assert metrics["loss"].shape == (4,) and int(state.step) == 12
    params.append(jax.device_get(state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *params)
