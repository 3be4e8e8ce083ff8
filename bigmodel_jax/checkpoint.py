"""Orbax checkpoints under WORKDIR/checkpoints: the train state and the Grain iterator together.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-write leaves no checkpoint that restore would take.
"""

import os
from typing import Any

import grain
import orbax.checkpoint as ocp

from bigmodel_jax.config import ConfigError


def directory(workdir: str) -> str:
  return os.path.abspath(os.path.join(workdir, "checkpoints"))


def manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         cleanup_tmp_directories=True)
  return ocp.CheckpointManager(directory(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_iter: Any) -> None:
  """Starts an asynchronous save; `mngr.wait_until_finished()` before exiting."""
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=grain.checkpoint.CheckpointSave(data_iter)),
            force=True)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any,
                   data_iter: Any) -> tuple[Any, int] | None:
  """(state, step) from the newest checkpoint, the iterator set to its saved position; or None."""
  step = mngr.latest_step()
  if step is None:
    return None
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iter)))
  return restored["state"], step


def load_params(workdir: str, abstract_params: Any) -> Any:
  """The parameters of another workdir's newest checkpoint, sharded like `abstract_params`."""
  path = directory(workdir)
  if not os.path.isdir(path):
    raise ConfigError(f"init_from: no checkpoints in {workdir}")
  with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False)) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise ConfigError(f"init_from: no checkpoints in {workdir}")
    target = {"params": abstract_params}
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True)))
    except (ValueError, KeyError) as e:
      raise ConfigError(f"init_from {workdir}: its parameters do not fit this model: "
                        f"{str(e).splitlines()[0]}") from e
  return restored["state"]["params"]

