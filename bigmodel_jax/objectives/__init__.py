"""Objectives: what is learned (objectives/base.py holds the contract). Registry:
config.objective.name (empty: data.kind) -> the objective class; config.objective's other keys
go to its constructor. Which data kinds each trains on and which networks need an optimizer of
their own are checked before anything runs (config.OBJECTIVES).
"""

import inspect
from typing import Any

import ml_collections

from bigmodel_jax.config import objective_name
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.objectives import distill
from bigmodel_jax.objectives.base import Objective
from bigmodel_jax.objectives.captioning import Captioning
from bigmodel_jax.objectives.classify import Classify
from bigmodel_jax.objectives.contrastive import Contrastive
from bigmodel_jax.objectives.diffusion import Diffusion
from bigmodel_jax.objectives.gan import GAN
from bigmodel_jax.objectives.vae import VAE

OBJECTIVES: dict[str, type[Objective]] = {
    "classification": Classify,
    "lm": Classify,
    "seq2seq": Classify,
    "vae": VAE,
    "gan": GAN,
    "diffusion": Diffusion,
    "contrastive": Contrastive,
    "captioning": Captioning,
}
FROM_DATA = ("prompts",)  # constructor arguments a paired data set gives (pipeline.load)


def build(config: ml_collections.ConfigDict, model: Any, example: Any, num_outputs: Any,
          teacher: tuple[Any, Any] | None = None) -> Objective:
  """The config's objective over `model` (which objective trains which model, and on which data
  kinds, is checked by config.check_values). teacher: (model, variables or None) of a
  distillation teacher when config.distill.teacher is set."""
  name = objective_name(config)
  options = {k: v for k, v in config.objective.items() if k != "name"}
  input_shape = tuple(example.shape[1:]) if hasattr(example, "shape") else ()
  data = {}
  if isinstance(num_outputs, dict):  # paired data: classes, vocabulary, class prompts
    data, num_outputs = num_outputs, num_outputs["num_classes"]
  if name in ("classification", "lm", "seq2seq"):
    if options:
      raise ConfigError(f"objective '{name}' has no options ({', '.join(sorted(options))})")
    objective = Classify(model, input_shape, num_outputs, kind=name)
    if teacher is not None:  # the same loss, mixed with the teacher's outputs
      return distill.Distill(objective, *teacher, config.distill.temperature,
                             config.distill.alpha)
    return objective
  if config.distill.teacher:
    raise ConfigError(f"distillation trains classifiers and language models, not objective '{name}'")
  cls = OBJECTIVES[name]
  known = [p for p in inspect.signature(cls.__init__).parameters
           if p not in ("self", "model", "input_shape", "num_classes", *FROM_DATA)]
  unknown = sorted(set(options) - set(known))
  if unknown:
    raise ConfigError(f"objective '{name}' has no option {', '.join(unknown)}; options: "
                      f"{', '.join(known)}")
  given = {k: data[k] for k in FROM_DATA
           if k in data and k in inspect.signature(cls.__init__).parameters}
  try:
    return cls(model, input_shape, num_outputs, **options, **given)
  except ValueError as e:
    raise ConfigError(str(e)) from e

