"""Orbax checkpoints under WORKDIR/checkpoints: the train state, the Grain iterator and a digest.

Crash safety: Orbax writes each step into a temporary directory and renames it when complete, so
a process killed mid-write leaves nothing that restore would take. Every checkpoint also holds a
checksum of the state (state_digest) that restore recomputes: a checkpoint damaged later
(truncated, missing or altered files) fails to restore or fails the check, is moved to
WORKDIR/corrupt_checkpoints/ with a warning naming it, and the run resumes from the next older
good one. A save that fails stops the run with faults.DiskError (a full disk, exit 4) or
faults.FileError (any other reason, named; exit 6); older checkpoints stay as they were.
"""

import json
import sys
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from bigmodel_jax import faults, storage
from bigmodel_jax.faults import ConfigError


COMMIT_MARKER = "commit_success.txt"  # Orbax's name (orbax.checkpoint's atomicity_types)


def directory(workdir: str) -> str:
  return storage.absolute(storage.join(workdir, "checkpoints"))


def saved_steps(workdir: str) -> list[int]:
  """The steps of WORKDIR's finished checkpoints, oldest first (no Orbax manager needed): Orbax's
  rule, a step directory renamed into place locally, one with its commit marker in a bucket."""
  return sorted(ocp.step.checkpoint_steps(directory(workdir)))


def _finished(step_dir: str) -> bool:
  """One step's directory is finished by Orbax's rule (saved_steps' rule, for one step: a
  listing of every step costs a request per step in a bucket)."""
  if storage.is_remote(step_dir):
    return storage.exists(storage.join(step_dir, COMMIT_MARKER))
  return storage.isdir(step_dir)


def mark_complete(step_dir: str) -> None:
  """Orbax's commit marker in a step directory written whole by other means (convert's output,
  uploaded to a bucket: there a step without it is taken as unfinished)."""
  storage.write(storage.join(step_dir, COMMIT_MARKER), "")


def warn(message: str) -> None:
  if jax.process_index() == 0:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class _Position:
  """A Grain iterator's state taken earlier; Grain's checkpoint handler writes get_state()'s
  bytes as the iterator's JSON, so it restores into the iterator like a live one."""

  def __init__(self, state: dict[str, Any]):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state, indent=4).encode()


class Checkpointer:
  """Saves asynchronously (`save` returns while the files are written) and checks each save
  before starting the next one and in `wait`. `waited_s`: the seconds the caller spent blocked
  in save and wait (copying the state off the devices, a previous save still in flight)."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = workdir
    self.dir = directory(workdir)
    self.mngr = ocp.CheckpointManager(self.dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True,
        # in a bucket, deleting the oldest step takes tens of requests: a thread does it
        enable_background_delete=storage.is_remote(workdir)))
    self._writing: int | None = None  # the step whose save may still be in flight
    self.waited_s = 0.0

  def save(self, step: int, state: Any, data_position: Any) -> None:
    """data_position: the data iterator, or its get_state() taken after the step's batch (the
    trainer reads a batch ahead); saved in the same form either way."""
    t0 = time.time()
    self.wait()
    digest = state_digest(state)
    if isinstance(data_position, dict):
      data_position = _Position(data_position)
    try:
      self.mngr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_position),
          digest=ocp.args.JsonSave({"leaves": digest})), force=True)
    except Exception as e:  # noqa: BLE001 (a synchronous part of the write failed)
      self._failed(step, e)
    self._writing = step
    self.waited_s += time.time() - t0

  def wait(self) -> None:
    """Blocks until the last save is on disk; DiskError or FileError if it is not."""
    step, self._writing = self._writing, None
    if step is None:
      return
    t0 = time.time()
    try:
      self.mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      self._failed(step, e)
    if not _finished(storage.join(self.dir, str(step))):
      self._failed(step, RuntimeError("the checkpoint was not completed (see the log above)"))
    self.waited_s += time.time() - t0

  def _failed(self, step: int, e: BaseException) -> None:
    faults.silence_background_errors()
    if jax.process_index() == 0:  # free the space the partial write took
      for tmp in storage.glob(storage.join(self.dir, f"{step}.orbax-checkpoint-tmp*")):
        storage.remove(tmp, recursive=True)
    older = [s for s in self.mngr.all_steps() if s < step]
    kept = (f"the checkpoint of step {older[0]} is intact" if len(older) == 1 else
            f"the checkpoints of steps {', '.join(map(str, older))} are intact" if older else
            "no older checkpoint exists")
    raise faults.write_error(f"could not write the checkpoint of step {step} to {self.dir}", e,
                             f"; {kept}") from e

  def restore_latest(self, abstract_state: Any, data_iter: Any) -> tuple[Any, int] | None:
    """(state, step) from the newest good checkpoint, the iterator set to its saved position;
    None when there is none. Newer checkpoints that fail are moved aside with a warning. If
    none restores, nothing is moved (a changed model, not damage) and ConfigError says why."""
    failed: list[tuple[int, str]] = []
    for step in sorted(self.mngr.all_steps(), reverse=True):
      try:
        restored = self.mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain.checkpoint.CheckpointRestore(data_iter),
            digest=ocp.args.JsonRestore()))
        if state_digest(restored["state"]) != restored["digest"]["leaves"]:
          raise ValueError("its contents do not match the digest saved with it")
      except Exception as e:  # noqa: BLE001 (any failure: try the next older one)
        failed.append((step, faults.first_line(e)[:200]))
        continue
      for bad, why in failed:
        self._move_aside(bad, why, step)
      return restored["state"], step
    if failed:
      step, why = failed[0]
      raise ConfigError(f"no checkpoint in {self.dir} can be restored (step {step}: {why}); "
                        "if the model changed, use another workdir")
    return None

  def _move_aside(self, step: int, why: str, resumed: int) -> None:
    target = storage.join(self.workdir, "corrupt_checkpoints", str(step))
    warn(f"checkpoint step {step} in {self.dir} is damaged ({why}); moved to {target}; "
         f"resuming from step {resumed}")
    if jax.process_index() == 0:
      storage.makedirs(storage.parent(target))
      n = 1
      while storage.exists(target):
        target, n = storage.join(self.workdir, "corrupt_checkpoints", f"{step}.{n}"), n + 1
      storage.move(storage.join(self.dir, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"moved aside checkpoint {step}")
    self.mngr.reload()

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def close(self) -> None:
    self.mngr.close()


def save_tree(path: str, tree: Any) -> None:
  """A pytree of host arrays as one Orbax checkpoint at path (restore_variables reads it as
  WORKDIR/checkpoints/STEP/state): quantize's and convert's outputs."""
  import numpy as np
  with ocp.PyTreeCheckpointer() as ckpt:
    ckpt.save(storage.absolute(path), jax.tree.map(np.asarray, tree))


def restore_variables(workdir: str, abstract: dict[str, Any]) -> dict[str, Any]:
  """{"params", "model_state"} of a workdir's newest checkpoint (a generator's BatchNorm
  statistics with its parameters), placed like `abstract` (runs/load.py reads workdirs
  through this)."""
  steps = saved_steps(workdir)
  if not steps:
    raise ConfigError(f"no checkpoints in {workdir}")
  state_dir = storage.join(directory(workdir), str(steps[-1]), "state")
  empty = {k: v for k, v in abstract.items() if v == {}}  # e.g. no model state: nothing to read
  abstract = {k: v for k, v in abstract.items() if k not in empty}
  try:
    return {**empty, **ocp.PyTreeCheckpointer().restore(state_dir, args=ocp.args.PyTreeRestore(
        abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True))}
  except Exception as e:  # noqa: BLE001
    raise ConfigError(f"{workdir}: cannot read the parameters of {state_dir}: "
                      f"{faults.first_line(e)}") from e


@jax.jit
def _leaf_checksums(leaves: list[jax.Array]) -> list[jax.Array]:
  def one(x):
    bits = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[bits.dtype.itemsize]
    u = jax.lax.bitcast_convert_type(bits, width).astype(jnp.uint32).reshape(-1)
    position = jnp.arange(u.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.sum(u * position, dtype=jnp.uint32)  # wraps mod 2**32: exact in any order
  return [one(x) for x in leaves]


def state_digest(state: Any) -> list[int]:
  """A position-weighted checksum of every leaf's bits, computed where the shards live (works
  multi-host). Saved with each checkpoint and checked on restore: a flipped, zeroed or
  missing chunk changes it."""
  return [int(c) for c in jax.device_get(_leaf_checksums(jax.tree.leaves(state)))]
