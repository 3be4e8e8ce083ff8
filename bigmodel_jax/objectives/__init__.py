"""Objectives: what is learned (objectives/base.py holds the contract). The registry is
config_rules.OBJECTIVES: config.objective.name (empty: data.kind) -> its class, the data kinds
it trains on, its networks and its model, checked before anything runs (config.check_values);
config.objective's other keys go to the class's constructor.
"""

import importlib
import inspect
from typing import Any

import ml_collections

from bigmodel_jax.config import objective_name
from bigmodel_jax.config_rules import OBJECTIVES
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.objectives import distill
from bigmodel_jax.objectives.base import Objective

FROM_DATA = ("prompts",)  # constructor arguments a paired data set gives (pipeline.load)


def objective_class(name: str) -> type[Objective]:
  """The class config_rules.OBJECTIVES[name] names (MODULE.CLASS under this package)."""
  module, cls = OBJECTIVES[name].cls.rsplit(".", 1)
  return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def build(config: ml_collections.ConfigDict, model: Any, example: Any, num_outputs: Any,
          teacher: tuple[Any, Any] | None = None) -> Objective:
  """The config's objective over `model` (which objective trains which model, and on which data
  kinds, is checked by config.check_values). teacher: (model, variables or None) of a
  distillation teacher when config.distill.teacher is set."""
  name = objective_name(config)
  entry, cls = OBJECTIVES[name], objective_class(name)
  options = {k: v for k, v in config.objective.items() if k != "name"}
  input_shape = tuple(example.shape[1:]) if hasattr(example, "shape") else ()
  data = {}
  if isinstance(num_outputs, dict):  # paired data: classes, vocabulary, class prompts
    data, num_outputs = num_outputs, num_outputs["num_classes"]
  if config.distill.teacher and not entry.distills:
    raise ConfigError(f"distillation trains classifiers and language models, not objective '{name}'")
  fixed = dict(entry.fixed)
  parameters = inspect.signature(cls.__init__).parameters
  known = [p for p in parameters if p not in ("self", "model", "input_shape", "num_classes",
                                              *FROM_DATA, *fixed)]
  unknown = sorted(set(options) - set(known))
  if unknown:
    raise ConfigError(f"objective '{name}' has no option {', '.join(unknown)}; options: "
                      f"{', '.join(known) or 'none'}")
  given = {k: data[k] for k in FROM_DATA if k in data and k in parameters}
  try:
    objective = cls(model, input_shape, num_outputs, **fixed, **options, **given)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  objective.networks = entry.networks
  if teacher is not None:  # the same loss, mixed with the teacher's outputs
    return distill.Distill(objective, *teacher, config.distill.temperature, config.distill.alpha)
  return objective
