"""What train, --dry_run, summary and the benchmarks all build from a config: the mesh plan, the
model, the objective, the optimizer and schedule, and the train step's static options.

Config checks that need no data live in config.check_values; the ones here need the devices
(the mesh) or the data set's metadata (the input shape, the number of classes).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax

from bigmodel_jax import models, objectives, optim, sharding, steps
from bigmodel_jax.compression import qwix_wrap
from bigmodel_jax import state as state_lib
from bigmodel_jax.config import ConfigError


@dataclasses.dataclass
class Build:
  plan: sharding.Plan | None
  model: nn.Module
  objective: objectives.Objective
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  step_options: dict[str, Any]  # steps.train_step's static arguments
  example: Any  # one example's inputs (batch axis of 1): arrays or ShapeDtypeStructs
  model_name: str

  def create_state(self, seed: int) -> tuple[state_lib.TrainState, state_lib.TrainState]:
    """(state, shardings): created in place on the mesh; a model whose options do not fit the
    data fails here with a ConfigError."""
    with models.init_errors_as_config_errors(self.model_name, self.example):
      return state_lib.create(self.model, self.tx, self.example, seed, self.plan,
                              self.objective.extra_state)

  def planned_state(self) -> state_lib.TrainState:
    """The state as ShapeDtypeStructs with its shardings, nothing allocated."""
    with models.init_errors_as_config_errors(self.model_name, self.example):
      return state_lib.planned(self.model, self.tx, self.example, self.plan,
                               self.objective.extra_state)


def build(config: ml_collections.ConfigDict, example: Any, num_outputs: Any,
          total_steps: int | None = None, mesh: bool = True, devices: list | None = None) -> Build:
  """total_steps None: the schedule's length only has to be valid (planning, summaries).
  mesh False: no plan (a summary sizes a model for a mesh this machine does not have).
  devices: the mesh's (default all)."""
  plan = None
  if mesh:
    plan = sharding.Plan(config.sharding, config.sharding_rules, config.mesh.to_dict(), devices)
    plan.check_batch_size("batch_size", config.batch_size)
    micro = config.batch_size // config.grad_accum_steps
    if micro % plan.data_parallel_size:
      raise ConfigError(f"batch_size={config.batch_size} / grad_accum_steps="
                        f"{config.grad_accum_steps} must be a whole micro-batch dividing over "
                        f"{plan.data_parallel_size} devices")
  if total_steps is None:
    total_steps = max(config.total_steps, config.schedule.warmup_steps + 1,
                      *(o.schedule.warmup_steps + 1 for o in config.optimizers.values()))
  model = qwix_wrap.wrap(config, models.build_for(config, num_outputs))  # QAT, LoRA
  objective = objectives.build(config, model, example, num_outputs)
  tx, schedule = optim.for_networks(config, objective.networks, total_steps)
  return Build(plan=plan, model=model, objective=objective, tx=tx, schedule=schedule,
               step_options=steps.step_options(config, objective, tx, schedule), example=example,
               model_name=config.model.name)


def example_of(examples: Any) -> Any:
  """One training example's inputs, batch axis 1, as device arrays."""
  import jax.numpy as jnp
  import numpy as np
  return jax.tree.map(jnp.asarray, examples.gather(np.zeros(1, np.int64))["inputs"])
