"""Reliability with real processes: SIGKILL at random moments (some during checkpoint writes),
preemption by SIGTERM and SIGINT, damaged checkpoints, non-finite losses, a full disk, and
determinism. Every interrupted run, rerun with the same command, ends bit-identical to a run
that was never interrupted."""

import errno
import glob
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import REPO, run_main, small_config

from bigmodel_jax import faults
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.trainer import train

STEPS = 400
ARGS = ["--config=configs/mnist1d.py:cnn", f"--config.total_steps={STEPS}", "--config.batch_size=64",
        "--config.checkpoint_every=10", "--config.log_every=10", "--config.eval_every=200"]


def _start(workdir, stdout=subprocess.PIPE) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "bigmodel_jax.main", *ARGS, f"--workdir={workdir}"],
                          cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=120.0, poll=0.02) -> bool:
  end = time.time() + timeout
  while time.time() < end and proc.poll() is None:
    if predicate():
      return True
    time.sleep(poll)
  return False


def _results(workdir) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _steps_on_disk(workdir, tmp: bool = False) -> list[int]:
  """Steps of the finished checkpoints, or (tmp) of the unfinished ones (Orbax's tmp dirs)."""
  path = os.path.join(workdir, "checkpoints")
  names = os.listdir(path) if os.path.isdir(path) else []
  if tmp:
    return [int(n.split(".")[0]) for n in names if "orbax-checkpoint-tmp" in n]
  return [int(n) for n in names if n.isdigit()]


def _tmp_dirs(workdir) -> list[str]:
  return glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*"))


def _logged_steps(workdir) -> list[int]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f if "train/loss" in line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run every interrupted one must equal."""
  workdir = tmp_path_factory.mktemp("reference")
  proc = run_main(*ARGS, f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr
  return str(workdir)


def test_ten_sigkills_some_during_checkpoint_writes_then_rerun_is_bit_identical(reference, tmp_path):
  workdir = str(tmp_path / "killed")
  # Seeded: the delays repeat from run to run. When a kill lands still depends on the machine's
  # timing, so the loop goes on (up to 20 kills) until at least 2 of them cut a write short.
  rng = random.Random(20261130)
  kills = []  # (how, seconds after the trigger, whether a checkpoint write was cut short)
  while len(kills) < 10 or sum(k[2] for k in kills) < 2 and len(kills) < 20:
    done = _steps_on_disk(workdir)
    newest = max(done, default=0)
    proc = _start(workdir, stdout=subprocess.DEVNULL)  # progress lines could fill a pipe
    if len(kills) % 2:  # the moment this run starts writing a checkpoint, plus 0-5 ms
      _wait_for(lambda: any(s > newest for s in _steps_on_disk(workdir, tmp=True)), proc,
                poll=0.0005)
      delay, how = rng.uniform(0.0, 0.005), "in write"
    else:  # anywhere once this run has saved a checkpoint of its own
      _wait_for(lambda: max(_steps_on_disk(workdir), default=0) > newest, proc)
      delay, how = rng.uniform(0.0, 0.5), "random"
    time.sleep(delay)
    if proc.poll() is not None:  # finished before the kill: start again from scratch
      assert proc.returncode == 0, proc.stderr.read()
      shutil.rmtree(workdir)
      continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    cut = any(s > newest for s in _steps_on_disk(workdir, tmp=True))  # a write left unfinished
    kills.append((how, round(delay, 4), cut))
  final = run_main(*ARGS, f"--workdir={workdir}")
  assert final.returncode == 0, final.stderr
  cut_writes = sum(k[2] for k in kills)
  print(f"kills: {kills}; {cut_writes} cut a checkpoint write short")
  assert cut_writes >= 2, kills
  results, expected = _results(workdir), _results(reference)
  assert results["params_sha256"] == expected["params_sha256"], kills
  assert results["eval/accuracy"] == expected["eval/accuracy"]
  assert 0 < results["start_step"] < STEPS
  assert _logged_steps(workdir) == list(range(10, STEPS + 1, 10)), kills
  # The final checkpoints are equal bit for bit, optimizer state included.
  a, b = (ocp.StandardCheckpointer().restore(os.path.join(w, "checkpoints", str(STEPS), "state"))
          for w in (workdir, reference))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_sigterm_and_sigint_save_and_exit_75_and_the_rerun_is_exact(reference, tmp_path):
  workdir = str(tmp_path / "preempted")
  proc = _start(workdir)
  assert _wait_for(lambda: os.path.exists(os.path.join(workdir, "metrics.jsonl")), proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == faults.PREEMPTED == 75, err
  line = err.strip().splitlines()[-1]
  assert line.startswith("preempted: SIGTERM at step ") and "rerun the same command" in line, err
  step = int(line.split("at step ")[1].split(":")[0])
  assert 0 < step < STEPS and os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))
  assert not _tmp_dirs(workdir)  # the save finished before the exit

  proc = _start(workdir)  # resumes; then Ctrl-C does the same
  assert _wait_for(lambda: len(_logged_steps(workdir)) > step // 10, proc)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 75 and f"Resumed from the checkpoint at step {step}" in out, err
  assert "preempted: SIGINT at step " in err

  final = run_main(*ARGS, f"--workdir={workdir}")
  assert final.returncode == 0, final.stderr
  assert _results(workdir)["params_sha256"] == _results(reference)["params_sha256"]


def test_a_second_sigint_exits_at_once():
  # A step that takes long (a big model's step or save): the first interrupt is noted, the second
  # one ends the process without waiting for it.
  script = """if True:
    import os, signal, time
    from bigmodel_jax.faults import StopSignals
    with StopSignals(multi_process=False) as stop:
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.2)
      assert stop.requested(1) and stop.received == "SIGINT"
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(30)
    print("not reached")"""
  t0 = time.time()
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 130 and time.time() - t0 < 20, proc.stderr
  assert "Second interrupt: exiting now" in proc.stderr and "not reached" not in proc.stdout


def _corrupt_values(step_dir):  # the state still restores, but to other values than were saved
  path = os.path.join(step_dir, "state")
  with ocp.StandardCheckpointer() as checkpointer:
    leaves, treedef = jax.tree.flatten(checkpointer.restore(path))
  biggest = max(range(len(leaves)), key=lambda i: np.size(leaves[i]))
  leaves[biggest] = np.asarray(leaves[biggest]) + 1
  shutil.rmtree(path)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(path, jax.tree.unflatten(treedef, leaves))


def _corrupt_flip(step_dir):  # bytes changed in place (compressed data: usually unreadable)
  path = max(glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*")),
             key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(b"\xff\xff\xff\xff")


def _corrupt_truncate(step_dir):
  path = max(glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*")),
             key=os.path.getsize)
  os.truncate(path, os.path.getsize(path) // 2)


def _corrupt_missing(step_dir):  # the data iterator's state is gone
  os.remove(glob.glob(os.path.join(step_dir, "data", "process_0*.json"))[0])


def test_damaged_newest_checkpoints_are_moved_aside_and_the_run_resumes_from_a_good_one(
    tmp_path, capfd):
  def config():
    return small_config("cnn", total_steps=60, batch_size=64, checkpoint_every=12,
                        checkpoint_keep=5, log_every=12, eval_every=60)
  reference, damaged = str(tmp_path / "reference"), str(tmp_path / "damaged")
  expected = train.train_and_evaluate(config(), reference)
  shutil.copytree(reference, damaged)
  damage = {60: (_corrupt_flip, ""), 48: (_corrupt_values, "do not match the digest"),
            36: (_corrupt_truncate, ""), 24: (_corrupt_missing, "does not exist")}
  for step, (corrupt, _) in damage.items():
    corrupt(os.path.join(damaged, "checkpoints", str(step)))
  capfd.readouterr()
  results = train.train_and_evaluate(config(), damaged)
  err = capfd.readouterr().err.splitlines()
  for step, (_, why) in damage.items():
    line = next((e for e in err if f"warning: checkpoint step {step} in " in e), "")
    assert why in line and "is damaged" in line, err
    assert os.path.isdir(os.path.join(damaged, "corrupt_checkpoints", str(step)))
  assert results["start_step"] == 12
  assert results["params_sha256"] == expected["params_sha256"]
  assert sorted(os.listdir(os.path.join(damaged, "checkpoints")), key=int) == ["12", "24", "36", "48", "60"]

  # A checkpoint that does not fit the model is not damage: an error, and nothing is moved.
  changed = config()
  changed.model.channels = (8, 8, 8)
  before = sorted(os.listdir(os.path.join(reference, "checkpoints")))
  with pytest.raises(ConfigError, match="no checkpoint in .* can be restored"):
    train.train_and_evaluate(changed, reference, allow_config_change=True)
  assert sorted(os.listdir(os.path.join(reference, "checkpoints"))) == before
  assert not os.path.exists(os.path.join(reference, "corrupt_checkpoints"))


NAN_ARGS = ["--config=configs/mnist1d.py:cnn", "--config.total_steps=40", "--config.batch_size=64",
            "--config.log_every=10", "--config.checkpoint_every=10", "--config.schedule.name=step",
            "--config.schedule.boundaries=(0.5,)", "--config.schedule.decay_factor=1e15"]


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  # The learning rate jumps by 1e15 after step 20: step 21's update is finite (the parameters
  # grow to ~1e13), step 22's loss is not (the logits overflow).
  proc = run_main(*NAN_ARGS, f"--workdir={tmp_path}")
  assert proc.returncode == 3, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: non-finite loss, gradients or update at step 22; stopped before applying it; the "
      f"last good checkpoint is step 20 in {tmp_path}/checkpoints; lower the learning rate, or "
      "set --config.nan_policy=skip to skip such updates and count them")
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20"]
  assert not (tmp_path / "results.json").exists()


def test_a_nan_update_from_finite_gradients_is_not_applied(tmp_path):
  # Adam without epsilon divides 0 by 0 where a gradient is exactly 0 (the digits' border pixels
  # are 0 in every image, so their first-layer weights get none): the loss and the gradients of
  # step 1 are finite, its update is not. It stops at step 1, nothing applied.
  c = small_config("mlp", "digits", total_epochs=None, total_steps=20, log_every=10,
                   checkpoint_every=10, eval_every=20,
                   **{"optimizer.eps": 0.0, "schedule.warmup_steps": 5})
  with pytest.raises(faults.NonFinite, match="^non-finite loss, gradients or update at step 1; "
                     "stopped before applying it; no checkpoint was written"):
    train.train_and_evaluate(c, str(tmp_path))


def test_nan_policy_skip_counts_but_a_non_finite_evaluation_is_not_a_success(tmp_path):
  c = small_config("cnn", total_steps=40, batch_size=64, log_every=10, checkpoint_every=10,
                   nan_policy="skip")
  c.schedule.name, c.schedule.boundaries, c.schedule.decay_factor = "step", (0.5,), 1e15
  # Step 21's update is finite but makes parameters of ~1e13: their logits overflow. The
  # updates after it are skipped and counted; the evaluation at the end is not finite, and the
  # run ends with that error, not with results.
  with pytest.raises(faults.NonFinite, match=r"evaluation at step 40 is not finite \(eval/loss\)"
                     r": the model's outputs overflow; the last good checkpoint is step 30"):
    train.train_and_evaluate(c, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["train/nonfinite_updates"] for r in rows] == [0, 0, 9, 19]  # steps 22..40 skipped
  assert rows[-1]["eval/loss"] is None and rows[-1]["eval/top5_accuracy"] == 0.0  # NaN: no hits
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["10", "20", "30"]
  assert not (tmp_path / "results.json").exists()
  state = ocp.StandardCheckpointer().restore(str(tmp_path / "checkpoints" / "30" / "state"))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def _file_hashes(directory) -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        out[os.path.relpath(os.path.join(root, name), directory)] = hashlib.sha256(f.read()).hexdigest()
  return out


def test_disk_full_while_saving_is_a_clear_error_and_older_checkpoints_stay(tmp_path):
  workdir = tmp_path / "w"
  args = ["--config=configs/mnist1d.py:cnn", "--config.batch_size=64", "--config.log_every=20",
          "--config.checkpoint_every=20", "--config.eval_every=1000", f"--workdir={workdir}"]
  assert run_main(*args, "--config.total_steps=40").returncode == 0
  before = _file_hashes(workdir / "checkpoints")

  def small_files():  # each file may hold 4 KB: a checkpoint's metadata and arrays do not fit
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000, 4_000))
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.main", *args, "--config.total_steps=80"],
                        cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=small_files)
  assert proc.returncode == 4, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: could not write the checkpoint of step 60 to {workdir}/checkpoints: File too large "
      "(errno 27); the checkpoints of steps 20, 40 are intact; free some space and rerun the same "
      "command to resume")
  assert _file_hashes(workdir / "checkpoints") == before  # the partial write is gone too
  proc = run_main(*args, "--config.total_steps=80")
  assert proc.returncode == 0 and "Resumed from the checkpoint at step 40" in proc.stdout


def test_same_config_and_seed_give_bit_identical_results(tmp_path):
  runs = [train.train_and_evaluate(small_config("cnn", total_steps=20, batch_size=64, log_every=10,
                                                eval_every=20), str(tmp_path / str(i)))
          for i in range(2)]
  assert runs[0]["params_sha256"] == runs[1]["params_sha256"]
  with open(tmp_path / "0" / "metrics.jsonl") as a, open(tmp_path / "1" / "metrics.jsonl") as b:
    strip = lambda line: {k: v for k, v in json.loads(line).items()  # noqa: E731 (timings differ)
                          if "per_sec" not in k and "input_wait" not in k}
    assert [strip(x) for x in a] == [strip(y) for y in b]


def test_non_finite_logits_are_never_hits():
  # No logit is greater than a NaN: counted naively, a NaN row puts every label in the top 5.
  from bigmodel_jax.objectives.classify import hits as hits_of
  logits = jnp.stack([jnp.full(10, jnp.nan), jnp.arange(10.0), jnp.arange(10.0).at[0].set(jnp.inf)])
  hits = hits_of(logits, jnp.array([3, 9, 9]))
  assert hits["accuracy"].tolist() == [0.0, 1.0, 0.0]
  assert hits["top5_accuracy"].tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("error, status, text", [
    (OSError(errno.ENOSPC, "No space left on device"), 4, "No space left on device (errno 28)"),
    (PermissionError(errno.EACCES, "Permission denied"), 6, "Permission denied (errno 13)"),
    (RuntimeError("Unable to cast Python instance of type <class 'str'>"), 6,
     "Unable to cast Python instance"),
])
def test_a_failed_save_says_what_failed_and_only_a_full_disk_is_called_one(tmp_path, monkeypatch,
                                                                          error, status, text):
  from bigmodel_jax.runs import checkpoint
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=3)
  state = {"w": jnp.ones(4)}
  ckpt.save(1, state, {"position": 1})
  ckpt.wait()

  def failing_save(*args, **kwargs):  # what Orbax raises when the system refuses the write
    raise error
  monkeypatch.setattr(ckpt.mngr, "save", failing_save)
  with pytest.raises(faults.RunStopped) as raised:
    ckpt.save(2, state, {"position": 2})
  message = str(raised.value)
  assert raised.value.exit_code == status
  assert message.startswith(f"could not write the checkpoint of step 2 to {tmp_path}/checkpoints: "
                            f"{text}") and "the checkpoint of step 1 is intact" in message
  assert ("free some space" in message) == (status == 4)


def test_a_file_the_run_cannot_write_is_named_with_exit_6(tmp_path):
  # Not a full disk: the one line names the file and the system's reason, no traceback.
  (tmp_path / "metrics.jsonl").mkdir()
  proc = run_main(*ARGS, "--config.total_steps=20", f"--workdir={tmp_path}")
  assert proc.returncode == 6, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path}/metrics.jsonl: Is a directory (errno 21)")
  assert "Traceback" not in proc.stderr
