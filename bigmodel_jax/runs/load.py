"""The one loader of a workdir: its config and its newest parameters, in eval form.

Every reader of a finished (or running) workdir goes through here: the commands (sample,
predict, quantize, convert --to, report), the sample judge, the distillation teacher, and the
trainer's warm start (init_from, LiT's tower) and resume check. A workdir is

  a training run's   config.json, checkpoints/STEP/state (the TrainState; the newest is read)
  a converted one    config.json, convert.json (the number of outputs), checkpoints/0/state
  a quantize OUT     config.json, quantized/ (int8 / int4 kernels with their scales)

config.json is read over the current defaults: a workdir written before a key existed loads
with that key's default. The model returned is the plain one (no QAT wrapping, no LoRA: a LoRA
run's adapters come merged into their kernels, a quantized run's kernels dequantized), its
variables {"params", **other collections} (a teacher's collection left out) on the host.
"""

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from bigmodel_jax import config as config_lib
from bigmodel_jax import models, storage
from bigmodel_jax.compression import ptq, qwix_wrap
from bigmodel_jax.data import tasks
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models.layout import Layout
from bigmodel_jax.runs import checkpoint

CONVERTED = "convert.json"  # a converted workdir's report: source, family, num_outputs, tensors
QUANTIZED = "quantized"  # a quantize OUT's checkpoint of {"params", "model_state"}


@dataclasses.dataclass
class Loaded:
  config: ml_collections.ConfigDict
  model: nn.Module  # the plain model, in eval mode
  variables: dict[str, Any]  # {"params", **collections}: host arrays (abstract: not restored)
  num_outputs: Any  # classes, vocabulary, or a paired data set's {"num_classes", ...}
  example: Any  # one example's inputs, ShapeDtypeStructs with a batch axis of 1


def tuples(x: Any) -> Any:
  """JSON lists back to tuples (config fields such as patch sizes are tuples)."""
  if isinstance(x, dict):
    return {k: tuples(v) for k, v in x.items()}
  return tuple(tuples(v) for v in x) if isinstance(x, list) else x


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """WORKDIR/config.json over the current defaults; ConfigError if there is none or it does
  not parse."""
  path = storage.join(workdir, "config.json")
  if not storage.isfile(path):
    raise ConfigError(f"no config.json in {workdir}: not a workdir")
  try:
    saved = json.loads(storage.read_text(path))
    config = config_lib.default_config()
    config.update(ml_collections.ConfigDict(tuples(saved)))
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise ConfigError(f"{path} is unreadable ({e})") from e
  return config


def load(workdir: str, restore: bool = True, layout: Layout = Layout()) -> Loaded:
  """The workdir's config, model and newest variables (restore False: their shapes only,
  nothing read but the config). layout: the model's (a run's mesh; default: one device)."""
  config = read_config(workdir)
  num_outputs, example = _outputs_and_example(config, workdir)
  model = models.build_for(config, num_outputs, layout)
  with models.init_errors_as_config_errors(config.model.name, example):
    if not restore:
      return Loaded(config, model, abstract_variables(model, example), num_outputs, example)
    abstract = abstract_variables(qwix_wrap.wrap(config, model), example)  # LoRA: adapters too
  if storage.isdir(storage.join(workdir, QUANTIZED)):
    variables = _quantized(workdir, abstract)
  else:
    saved = jax.device_get(checkpoint.restore_variables(workdir, {
        "params": abstract.pop("params"), "model_state": abstract}))
    variables = {"params": saved["params"], **saved["model_state"]}
  if config.lora.rank:
    variables["params"] = qwix_wrap.merge(variables["params"], config.lora.alpha, config.lora.rank)
  return Loaded(config, model, variables, num_outputs, example)


def converted_report(workdir: str) -> dict[str, Any] | None:
  """A converted workdir's convert.json (None for any other workdir)."""
  report = storage.join(workdir, CONVERTED)
  if not storage.exists(report):
    return None
  try:
    return json.loads(storage.read_text(report))
  except ValueError as e:
    raise ConfigError(f"{report} is unreadable ({e})") from e


def _outputs_and_example(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, Any]:
  """The number of outputs (a converted workdir's from convert.json: no data set needed) and
  one example's inputs."""
  report = converted_report(workdir)
  if report is None:
    example, num_outputs = tasks.input_spec(config)
    return num_outputs, example
  return report["num_outputs"], converted_example(config)


def converted_example(config: ml_collections.ConfigDict) -> Any:
  """One example's inputs of a converted model: a decoder_lm's window of text (a Hugging Face
  model comes without a data set), else its data set's."""
  if config.model.name == "decoder_lm":
    return jax.ShapeDtypeStruct((1, min(config.data.seq_len, config.model.max_len)), np.int32)
  return tasks.input_spec(config)[0]


def abstract_variables(model: nn.Module, example: Any) -> dict[str, Any]:
  """{collection: tree of ShapeDtypeStructs} of a model's variables in eval mode."""
  return jax.eval_shape(lambda x: nn.unbox(model.init(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, x, train=False)),
      example)


def _quantized(workdir: str, abstract: dict[str, Any]) -> dict[str, Any]:
  with ocp.PyTreeCheckpointer() as ckpt:
    saved = ckpt.restore(storage.absolute(storage.join(workdir, QUANTIZED)))
  params = ptq.dequantize_params(saved["params"], abstract["params"])
  return {"params": params, **saved.get("model_state", {})}
