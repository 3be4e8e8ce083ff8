"""Sizing a model and planning its memory before launch, from the config and the data set's
metadata alone (no data read, nothing allocated, no workdir written).

summary(config): `python -m bigmodel_jax.summary --config=...`: parameters per module, the
total, and forward FLOPs per example (flops.py: every layer and time step counted).

dry_run(config): `python -m bigmodel_jax.main --config=... --dry_run [--dry_run_devices=64]
[--memory_budget_gb=80]`. Compiles the train step ahead of time for the configured mesh and
sharding, from abstract arrays only, and reports per device:
parameters, optimizer state and model state (exact: from the arrays' shardings), the compiled
step's temporaries and its peak (XLA's memory analysis), and FLOPs per step: the compiled step's
cost analysis, which counts a loop's body once, plus the iterations it left out (flops.py: every
layer of a scanned stack, every micro-batch), spread evenly over the devices.

--dry_run_devices plans a mesh larger than the machine by compiling for that many virtual CPU
devices (set before JAX starts). Shardings and the state's bytes are then exact for the target;
temporaries and FLOPs are the CPU compiler's, an estimate of what a GPU or TPU compiler does.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from bigmodel_jax import config as config_lib
from bigmodel_jax import metrics, models
from bigmodel_jax.data import tasks
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.pretrained import architecture
from bigmodel_jax.trainer import build as build_lib
from bigmodel_jax.trainer import flops, sharding, steps

GIB = 1024 ** 3


def summary(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The model of `config` sized without its data: inputs, outputs, parameters per top-level
  module and in all, forward FLOPs per example."""
  config, _ = architecture.of_init_from(config)
  example, num_outputs = tasks.input_spec(config)
  built = build_lib.build(config, example, num_outputs, mesh=False, restore=False)
  with models.init_errors_as_config_errors(config.model.name, example):
    variables = jax.eval_shape(lambda x: nn.unbox(built.model.init(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x, train=False)),
        example)
    forward = built.forward_flops(variables)
  modules = {name: sum(x.size for x in jax.tree.leaves(sub))
             for name, sub in variables["params"].items()}
  cache = None
  if config.model.name == "decoder_lm":
    cache = _decode_cache_bytes_per_token(built.model, config.dtype)
  return {"model": config.model.name, "objective": config_lib.objective_name(config),
          "data": "+".join(sorted(config.tasks)) or config.data.name,
          "input_shape": jax.tree.map(lambda x: list(x.shape[1:]), example),
          "input_dtype": jax.tree.map(lambda x: str(x.dtype), example),
          "num_outputs": ({k: v for k, v in num_outputs.items() if k != "prompts"}  # paired
                          if isinstance(num_outputs, dict) else num_outputs),
          "num_params": sum(modules.values()),
          "params_per_module": modules, "flops_per_example": forward,
          "decode_cache_bytes_per_token": cache}


def _decode_cache_bytes_per_token(model: Any, dtype: str) -> int:
  """The bytes a decoder LM's key/value cache holds per token, over all blocks, in the run's
  compute dtype: every head's key and value, or latent attention's latent and rotary key."""
  tokens = jax.ShapeDtypeStruct((1, model.max_len), "int32")
  cache = jax.eval_shape(lambda t: nn.unbox(model.init(jax.random.PRNGKey(0), t, decode=True))[
      "cache"], tokens)
  itemsize = jnp.dtype(dtype).itemsize
  return sum(x.size for x in jax.tree.leaves(cache)) * itemsize // model.max_len


def dry_run(config: ml_collections.ConfigDict, budget_gb: float | None = None) -> dict[str, Any]:
  config_lib.check_values(config)
  config, _ = architecture.of_init_from(config)
  if config.parallel.strategy != "jit":
    raise ConfigError("--dry_run plans the jit strategy (parallel.strategy=jit)")
  example, num_outputs = tasks.input_spec(config)
  built = build_lib.build(config, example, num_outputs, restore=False)
  mesh_plan = built.plan
  state = built.planned_state()

  batch = {"inputs": example, "label": _label_spec(config.data, example)}
  if config.data.kind == "seq2seq" or config.data.packing:
    batch["weights"] = jax.ShapeDtypeStruct(batch["label"].shape, "float32")
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((config.batch_size, *x.shape[1:]), x.dtype,
                                                      sharding=mesh_plan.batch_sharding), batch)
  step = steps.jit_train_step(mesh_plan, jax.tree.map(lambda x: x.sharding, state),
                              **built.step_options)
  traced = step.trace(state, batch)
  compiled = traced.lower().compile()
  flops_per_device = flops.per_device(traced, compiled)
  memory = compiled.memory_analysis()
  report = {
      "devices": jax.device_count(),
      "platform": jax.devices()[0].platform,
      "mesh": dict(mesh_plan.mesh.shape),
      "sharding": config.sharding,
      "num_params": sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)),
      "params_bytes": sharding.per_device_bytes(state.params),
      "opt_state_bytes": sharding.per_device_bytes(state.opt_state),
      "model_state_bytes": sharding.per_device_bytes(state.model_state),
      "temp_bytes": int(memory.temp_size_in_bytes) if memory else None,
      "peak_bytes": (int(memory.argument_size_in_bytes + memory.output_size_in_bytes
                         - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
                     if memory else None),
      "flops_per_step_per_device": flops_per_device,
  }
  if budget_gb is not None and report["peak_bytes"] is not None:
    report["budget_bytes"] = int(budget_gb * GIB)
    report["fits"] = report["peak_bytes"] <= report["budget_bytes"]
  _print(report)
  return report


def _label_spec(cfg: ml_collections.ConfigDict, example: Any) -> jax.ShapeDtypeStruct:
  if cfg.kind == "lm":  # packed: {"tokens", "segment_ids", "positions"}
    return jax.ShapeDtypeStruct((example["tokens"] if cfg.packing else example).shape, "int32")
  if cfg.kind == "seq2seq":
    return jax.ShapeDtypeStruct(example["decoder"].shape, "int32")
  return jax.ShapeDtypeStruct((1,), "int32")


def _print(r: dict[str, Any]) -> None:
  gib = lambda b: ("n/a" if b is None else f"{b / GIB:.3f} GiB" if b >= GIB  # noqa: E731
                   else f"{b / 2**20:.2f} MiB")
  lines = [
      f"Dry run: {r['sharding']} over mesh {r['mesh']} on {r['devices']} {r['platform']} devices; "
      f"{r['num_params']:,} parameters",
      f"  per device: parameters {gib(r['params_bytes'])}, optimizer state "
      f"{gib(r['opt_state_bytes'])}, model state {gib(r['model_state_bytes'])}",
      f"  compiled step: temporaries {gib(r['temp_bytes'])}, peak {gib(r['peak_bytes'])}; "
      f"{r['flops_per_step_per_device']:.4g} FLOPs per step per device",
  ]
  if r["platform"] == "cpu":
    lines.append("  (compiled for CPU devices: temporaries and FLOPs are the CPU compiler's "
                 "estimate; the state's bytes are exact)")
  if "fits" in r:
    verdict = "fits" if r["fits"] else "does NOT fit"
    lines.append(f"  {verdict} in a budget of {gib(r['budget_bytes'])} per device")
  for line in lines:
    metrics.console(line)
