"""Trains one experiment: python -m bigmodel_jax.main --config=configs/NAME.py[:ARG] --workdir=DIR.

Overrides: --config.KEY=VALUE (the config is locked: unknown keys and wrong types are errors).
Rerunning the same command on the same workdir resumes from its newest checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file: path.py[:arg].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config, metrics and checkpoints.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir whose config.json differs from this config.")
flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")


def main(argv: list[str]) -> None:
  def body() -> None:
    from bigmodel_jax import train  # after flag parsing: bad flags fail fast, before jax loads

    if not _WORKDIR.value:
      raise config_lib.ConfigError("--workdir is required")
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                             allow_config_change=_ALLOW_CONFIG_CHANGE.value)

  config_lib.run_command(argv, body)


def run() -> None:
  app.run(main, flags_parser=config_lib.parse_command_line)


if __name__ == "__main__":
  run()
