"""Model summary without training: parameters per module, total, FLOPs per example, and a
decoder LM's decode cache bytes per token.

  python -m bigmodel_jax.summary --config=configs/NAME.py[:ARG] [--json] [--config.KEY=VALUE ...]

FLOPs are XLA's cost analysis of one example's forward pass, each layer of a scanned stack and
each step of a recurrence counted (flops.py; a training step costs about three times that). The
input shape and the number of outputs come from the data set's TFDS metadata and the config
(data/tasks.py:input_spec, as for --dry_run): nothing is downloaded, prepared or read, so a model
can be sized before its data set is on the machine.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import cli
from bigmodel_jax import config as config_lib
from bigmodel_jax.trainer import planning


def main(argv: list[str]) -> None:
  def body() -> None:
    config_lib.check_values(flags.FLAGS.config)
    summary = planning.summary(flags.FLAGS.config)
    if flags.FLAGS.json:
      print(json.dumps(summary, indent=2))
      return
    print(f"Model {summary['model']} on {summary['data']}: inputs {summary['input_shape']} "
          f"{summary['input_dtype']}, {summary['num_outputs']} outputs")
    width = max(len(n) for n in summary["params_per_module"]) + 2
    for name, count in summary["params_per_module"].items():
      print(f"  {name:<{width}}{count:>14,}")
    print(f"  {'total':<{width}}{summary['num_params']:>14,}")
    forward = summary["flops_per_example"]
    print(f"Forward FLOPs per example: {forward:,.0f}" if forward else "FLOPs: not available")
    if summary["decode_cache_bytes_per_token"]:
      print(f"Decode cache per token: {summary['decode_cache_bytes_per_token']:,} bytes")

  cli.run_command(argv, body)


def run() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment file: path.py[:arg].",
                                  lock_config=True)
  flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
  flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
  app.run(main, flags_parser=cli.parse_command_line)


if __name__ == "__main__":
  run()
