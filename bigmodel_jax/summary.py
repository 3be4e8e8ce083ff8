"""Model summary without training: parameters per module, total, FLOPs per example.

  python -m bigmodel_jax.summary --config=configs/NAME.py[:ARG] [--json] [--config.KEY=VALUE ...]

FLOPs are XLA's cost analysis of one example's forward pass, each layer of a scanned stack and
each step of a recurrence counted (flops.py; a training step costs about three times that). The
input shape and the number of outputs come from the data set's TFDS metadata and the config
(data/tasks.py:input_spec, as for --dry_run): nothing is downloaded, prepared or read, so a model
can be sized before its data set is on the machine.
"""

import json
from typing import Any

import flax.linen as nn
import jax
from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import cli, flops
from bigmodel_jax import config as config_lib


def params_per_module(params: Any) -> dict[str, int]:
  """Parameter count of each top-level module, by name."""
  return {name: sum(x.size for x in jax.tree.leaves(sub)) for name, sub in params.items()}


def summarize(config) -> dict[str, Any]:
  from bigmodel_jax import build, models
  from bigmodel_jax.data import tasks

  example, num_outputs = tasks.input_spec(config)
  b = build.build(config, example, num_outputs, mesh=False)
  with models.init_errors_as_config_errors(config.model.name, example):
    variables = jax.eval_shape(lambda x: nn.unbox(b.model.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x, train=False)),
        example)
    forward = flops.per_example(b.model, variables, example)
  modules = params_per_module(variables["params"])
  return {"model": config.model.name, "objective": config_lib.objective_name(config),
          "data": "+".join(sorted(config.tasks)) or config.data.name,
          "input_shape": jax.tree.map(lambda x: list(x.shape[1:]), example),
          "input_dtype": jax.tree.map(lambda x: str(x.dtype), example),
          "num_outputs": ({k: v for k, v in num_outputs.items() if k != "prompts"}  # paired
                          if isinstance(num_outputs, dict) else num_outputs),
          "num_params": sum(modules.values()),
          "params_per_module": modules, "flops_per_example": forward}


def main(argv: list[str]) -> None:
  def body() -> None:
    config_lib.check_values(flags.FLAGS.config)
    summary = summarize(flags.FLAGS.config)
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

  cli.run_command(argv, body)


def run() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment file: path.py[:arg].",
                                  lock_config=True)
  flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
  flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
  app.run(main, flags_parser=cli.parse_command_line)


if __name__ == "__main__":
  run()
