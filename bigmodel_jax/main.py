"""Trains one experiment: python -m bigmodel_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR.

Overrides: --config.KEY=VALUE (the config is locked: unknown keys and wrong types are errors).
Rerunning the same command on the same workdir resumes from its newest checkpoint.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from bigmodel_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file: path.py[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config, metrics and checkpoints.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose config.json differs from this config.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")


def main(argv: list[str]) -> None:
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every file at INFO
  from bigmodel_jax import train  # after flag parsing: bad flags fail fast, before jax loads

  try:
    if len(argv) > 1:
      raise config_lib.ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _WORKDIR.value:
      raise config_lib.ConfigError("--workdir is required")
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                             allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except config_lib.ConfigError as e:
    if _TRACEBACK.value:
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  app.run(main, flags_parser=config_lib.parse_command_line)


if __name__ == "__main__":
  run()
