"""How a run ends when something goes wrong: stop signals (preemption) and the exit statuses.

  0    finished
  1    an unexpected error (a bug): the traceback
  2    bad input (ConfigError): one line, nothing written
  3    non-finite loss or gradients with nan_policy=stop; the last good checkpoint is kept
  4    the disk is full (or a file-size quota hit) while writing; older checkpoints are intact
  5    lost contact with another process of a multi-process run
  6    a file could not be written for another reason (permission, a read-only file system, a
       path that is not a directory, ...): the message names the file and the reason; older
       checkpoints are intact
  75   preempted (SIGTERM, or one SIGINT): a checkpoint was saved; rerun the same command
  130  a second SIGINT: stopped at once, nothing saved after the last checkpoint

A scheduler requeues on 75 (EX_TEMPFAIL). When a process of a multi-process run dies, JAX's
distributed service also terminates the others once its heartbeats stop for
--heartbeat_timeout_s (then the status is JAX's abort, 134, with its message on stderr).
"""

import errno
import logging
import os
import re
import signal
import sys
import threading
from typing import Any

PREEMPTED = 75
SECOND_INTERRUPT = 130
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class ConfigError(ValueError):
  """Bad input: a config, flag, data set or workdir the run cannot use (exit status 2); the
  message is the one line the user sees, and nothing has been written."""


class RunStopped(Exception):
  """A run that ended early for a reason the user can act on; the message is the one line shown."""
  exit_code = 1


class Preempted(RunStopped):
  exit_code = PREEMPTED


class NonFinite(RunStopped):
  exit_code = 3


class DiskError(RunStopped):
  exit_code = 4


class PeerLost(RunStopped):
  exit_code = 5


class FileError(RunStopped):
  exit_code = 6


def write_error(what: str, e: BaseException, advice: str = "") -> RunStopped:
  """The one-line error for a failed write: DiskError (exit 4) for a full disk or a file-size
  quota, FileError (exit 6) naming the OS's reason for anything else."""
  if is_disk_error(e):
    return DiskError(f"{what}: {os_error_text(e)}{advice}; free some space and rerun the same "
                     "command to resume")
  return FileError(f"{what}: {os_error_text(e)}{advice}")


def _errno(e: BaseException) -> int | None:
  """An OSError's errno, or the one a TensorStore message names (os_error_code='28')."""
  code = getattr(e, "errno", None)
  if code is None:
    found = re.search(r"os_error_code='?(\d+)", str(e))
    code = int(found.group(1)) if found else None
  return code


def first_line(e: BaseException) -> str:
  """An exception's message for a one-line error: its first line, at most 300 characters."""
  return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def os_error_text(e: BaseException) -> str:
  """'No space left on device (errno 28)'; else the first line of the message."""
  code = _errno(e)
  if code is not None:
    return f"{os.strerror(code)} (errno {code})"
  return first_line(e)


def is_disk_error(e: BaseException) -> bool:
  return _errno(e) in DISK_ERRNOS


def silence_background_errors() -> None:
  """After a fatal write error: the writer threads' later tracebacks and logs add nothing to the
  one-line error about to be printed, and would bury it; the process is about to exit."""
  logging.disable(logging.CRITICAL)
  threading.excepthook = lambda args: None
  sys.unraisablehook = lambda args: None


class StopSignals:
  """SIGTERM and SIGINT ask the loop to stop after the current step (`requested(step)`).

  One process: Python handlers set a flag. Several processes: SIGTERM is left to JAX's
  preemption notifier, which tells every process, and `requested` is JAX's preemption sync
  point, so all of them stop at the same step; a SIGINT is forwarded to it as a SIGTERM.
  A second SIGINT exits at once with status 130.
  """

  def __init__(self, multi_process: bool):
    self.multi_process = multi_process
    self.received: str | None = None
    self._old: dict[int, Any] = {}

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is not threading.main_thread():
      return self  # signal handlers can only be set from the main thread
    self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
    if not self.multi_process:
      self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc: Any) -> None:
    for sig, handler in self._old.items():
      signal.signal(sig, handler)
    self._old.clear()

  def _on_sigterm(self, signum: int, frame: Any) -> None:
    self.received = self.received or "SIGTERM"

  def _on_sigint(self, signum: int, frame: Any) -> None:
    if self.received is not None:
      print("\nSecond interrupt: exiting now; nothing saved after the last checkpoint.",
            file=sys.stderr, flush=True)
      os._exit(SECOND_INTERRUPT)  # noqa: SLF001 (no cleanup: that is the point)
    self.received = "SIGINT"
    print("\nInterrupt: finishing this step and saving a checkpoint (interrupt again to exit "
          "at once).", file=sys.stderr, flush=True)
    if self.multi_process:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier

  def requested(self, step: int) -> bool:
    if self.multi_process:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        self.received = self.received or "SIGTERM"
        return True
      return False
    return self.received is not None
