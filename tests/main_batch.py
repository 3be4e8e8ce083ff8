"""Runs many `python -m bigmodel_jax.COMMAND ARGS` in one interpreter: the package is imported
once and each argument list runs in a forked child, as its own process would (its own flags,
exit status, stdout and stderr; the command module is imported in the child, where its flags
are defined). helpers.run_main_batch starts it; test_main's ~90 bad inputs each paid ~1.5 s
of interpreter start and imports before.

  python tests/main_batch.py < [[COMMAND, ARGS...], ...] (JSON)  ->  [[status, stdout, stderr], ...]
"""

import importlib
import json
import os
import signal
import sys
import tempfile
import traceback

for heavy in ("bigmodel_jax.trainer.train", "bigmodel_jax.pretrained.convert",
              "bigmodel_jax.inference.predict"):  # what the commands import: loaded once
  importlib.import_module(heavy)


def run_one(command: str, args: list[str], timeout: int) -> list:
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    pid = os.fork()
    if pid == 0:  # the child: a command of its own
      os.dup2(out.fileno(), 1)
      os.dup2(err.fileno(), 2)
      signal.alarm(timeout)
      sys.argv = [f"bigmodel_jax.{command}", *args]
      status = 0
      try:
        importlib.import_module(f"bigmodel_jax.{command}").run()
      except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except BaseException:  # noqa: BLE001  (printed as the interpreter would)
        traceback.print_exc()
        status = 1
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    out.seek(0)
    err.seek(0)
    return [status, out.read().decode(errors="replace"), err.read().decode(errors="replace")]


if __name__ == "__main__":
  runs = json.load(sys.stdin)
  results = [run_one(command, args, int(os.environ.get("MAIN_BATCH_TIMEOUT", "120")))
             for command, *args in runs]
  sys.stdout.write(json.dumps(results))
