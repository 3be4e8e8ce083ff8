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

from bigmodel_jax import models, objectives
from bigmodel_jax.compression import qwix_wrap
from bigmodel_jax.config import objective_name
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.objectives import distill
from bigmodel_jax.runs import checkpoint, load
from bigmodel_jax.models.layout import Layout
from bigmodel_jax.trainer import flops, optim, pmap, sharding, steps
from bigmodel_jax.trainer import state as state_lib


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
  one_device_model: nn.Module  # the model with no layout: what flops.per_example counts

  def create_state(self, seed: int) -> tuple[state_lib.TrainState, state_lib.TrainState]:
    """(state, shardings): created in place on the mesh; a model whose options do not fit the
    data fails here with a ConfigError."""
    with models.init_errors_as_config_errors(self.model_name, self.example):
      return state_lib.create(self.model, self.tx, self.example, seed, self.plan,
                              self.objective.extra_state)

  def forward_flops(self, variables: Any) -> float | None:
    """Forward FLOPs per example of the model on one device (no layout: a pipeline does not
    run on one example), from its variables (arrays or ShapeDtypeStructs)."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables)
    return flops.per_example(self.one_device_model, shapes, self.example)

  def planned_state(self) -> state_lib.TrainState:
    """The state as ShapeDtypeStructs with its shardings, nothing allocated."""
    with models.init_errors_as_config_errors(self.model_name, self.example):
      return state_lib.planned(self.model, self.tx, self.example, self.plan,
                               self.objective.extra_state)


def build(config: ml_collections.ConfigDict, example: Any, num_outputs: Any,
          total_steps: int | None = None, mesh: bool = True, devices: list | None = None,
          restore: bool = True) -> Build:
  """total_steps None: the schedule's length only has to be valid (planning, summaries).
  mesh False: no plan (a summary sizes a model for a mesh this machine does not have).
  devices: the mesh's (default all). restore False: a distillation teacher's variables are not
  read (planning)."""
  plan = None
  if mesh:
    plan = sharding.Plan(config.sharding, config.sharding_rules, config.mesh.to_dict(), devices,
                         config.pipeline.to_dict())
    plan.check_batch_size("batch_size", config.batch_size)
    plan.check_experts(config.model.get("num_experts", 0))
    micro = config.batch_size // config.grad_accum_steps
    if micro % plan.data_parallel_size:
      raise ConfigError(f"batch_size={config.batch_size} / grad_accum_steps="
                        f"{config.grad_accum_steps} must be a whole micro-batch dividing over "
                        f"{plan.data_parallel_size} devices")
  if total_steps is None:
    total_steps = max(config.total_steps, config.schedule.warmup_steps + 1,
                      *(o.schedule.warmup_steps + 1 for o in config.optimizers.values()))
  layout = layout_for(config, plan)
  model = models.build_for(config, num_outputs, layout)
  if plan is not None:
    _check_model_parallelism(config, plan, model)
  model = qwix_wrap.wrap(config, model)  # QAT, LoRA
  one_device = (model if layout == Layout() else
                qwix_wrap.wrap(config, models.build_for(config, num_outputs)))
  teacher = (_teacher(config, model, example, num_outputs, restore, layout)
             if config.distill.teacher else None)
  objective = objectives.build(config, model, example, num_outputs, teacher)
  tx, schedule = optim.for_networks(config, objective.networks, total_steps)
  return Build(plan=plan, model=model, objective=objective, tx=tx, schedule=schedule,
               step_options=steps.step_options(config, objective, tx, schedule), example=example,
               model_name=config.model.name, one_device_model=one_device)


def layout_for(config: ml_collections.ConfigDict, plan: sharding.Plan | None) -> Layout:
  """What the mesh decides for the model: the plan's layout; under pmap none of the mesh's
  (the step is mapped, not partitioned) but BatchNorm averaging over the mapped axis."""
  if config.parallel.strategy == "pmap":
    return Layout(batch_norm_axis=pmap.AXIS)
  return Layout() if plan is None else plan.layout


def _check_model_parallelism(config: ml_collections.ConfigDict, plan: sharding.Plan,
                             model: nn.Module) -> None:
  """Pipeline stages need a Transformer's scanned blocks that split into them; context
  parallelism a decoder_lm sequence that splits into the ring's chunks."""
  if plan.schedule is not None:
    depths = [getattr(model, a) for a in ("depth", "encoder_depth", "decoder_depth")
              if hasattr(model, a)]
    if not hasattr(model, "scan_layers") or not depths:
      raise ConfigError(f"mesh.stage={plan.schedule.stages} pipelines a Transformer's scanned "
                        f"blocks; model '{config.model.name}' has none (set mesh.stage=1)")
    if not model.scan_layers:
      raise ConfigError(f"mesh.stage={plan.schedule.stages} splits the scanned blocks into "
                        "stages: set --config.model.scan_layers=True")
    if plan.schedule.kind == "1f1b":
      _check_one_f_one_b(config)
    plan.check_pipeline(depths, {"batch_size / grad_accum_steps":
                                 config.batch_size // config.grad_accum_steps,
                                 "eval_batch_size": config.eval_batch_size})
  plan.check_context(config.model.name, config.data.seq_len)


def _check_one_f_one_b(config: ml_collections.ConfigDict) -> None:
  """The 1F1B schedule runs a decoder LM's embedding, stages and head apart (models/pipeline.py)
  with the lm objective's loss; what it does not run yet is a ConfigError."""
  what = ("a decoder_lm" if config.model.name != "decoder_lm" else
          "the lm objective" if objective_name(config) != "lm" else
          "dense blocks (model.num_experts=0)" if config.model.get("num_experts", 0) else
          "no multi-token prediction (model.mtp_depth=0)" if config.model.get("mtp_depth", 0) else
          "no quantization, LoRA or distillation" if (config.quantization.weight_bits or
                                                      config.lora.rank or config.distill.teacher)
          else None)
  if what:
    raise ConfigError(f"pipeline.schedule=1f1b trains {what}; use pipeline.schedule=gpipe")


def _teacher(config: ml_collections.ConfigDict, student: nn.Module, example: Any,
             num_outputs: Any, restore: bool, layout: Layout) -> tuple[nn.Module, Any]:
  """The distillation teacher's model and variables (None: not restored), from the workdir
  config.distill.teacher: a run of this student's kind on the same labels, whose model reads
  the student's inputs and gives outputs of the student's shape. Checked before it is read."""
  path, kind = config.distill.teacher, objective_name(config)
  try:
    teacher = load.load(path, restore=False, layout=layout)
  except ConfigError as e:
    raise ConfigError(f"distill.teacher: {e}") from None
  if teacher.num_outputs != num_outputs:
    raise ConfigError(f"distill.teacher {path} predicts {teacher.num_outputs} classes, this run's "
                      f"data has {num_outputs}: the teacher must be trained on the same labels")
  if objective_name(teacher.config) != kind:
    raise ConfigError(f"distill.teacher {path} holds a {objective_name(teacher.config)} run; "
                      f"the teacher of a {kind} student must be a {kind} run")
  if not checkpoint.saved_steps(path):
    raise ConfigError(f"distill.teacher: no checkpoints in {path}")
  try:
    distill.check_teacher(teacher.model, student, example)
  except ConfigError as e:
    raise ConfigError(f"distill.teacher {path}: {e}") from None
  return teacher.model, load.load(path).variables if restore else None


def example_of(examples: Any) -> Any:
  """One training example's inputs, batch axis 1, as device arrays."""
  import jax.numpy as jnp
  import numpy as np
  return jax.tree.map(jnp.asarray, examples.gather(np.zeros(1, np.int64))["inputs"])
