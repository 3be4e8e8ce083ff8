"""Post-training quantization of a trained workdir, and export of a LoRA run as plain weights
(`python -m bigmodel_jax.quantize`).

The workdir's newest checkpoint (runs/load.py: a LoRA run's adapters merged into its kernels)
has every kernel matching `modules` rounded to `weight_bits` (8 or 4; 0 keeps float32: a LoRA
export), and with act_bits=8 every layer's input too, with static scales from calibration
batches of the training split (compression/ptq.py). The result is evaluated on the eval split
through the trainer's evaluation and OUT gets config.json (the model as evaluated: no QAT, no
adapters), quantized/ (an Orbax checkpoint of {"params", "model_state"} whose quantized kernels
are {"qvalue": int8 or packed int4, "scale"}; runs/load.py reads it back dequantized) and
results.json. OUT is written whole or not at all; the workdir is only read.
"""

import os
import re
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigmodel_jax import config as config_lib
from bigmodel_jax import storage, writers
from bigmodel_jax.compression import prune, ptq
from bigmodel_jax.compression.config import BITS
from bigmodel_jax.data import tasks
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.runs import checkpoint, load
from bigmodel_jax.runs import workdir as workdir_lib
from bigmodel_jax.trainer import build as build_lib
from bigmodel_jax.trainer import evaluation

QUANTIZABLE = ("classification", "lm", "seq2seq")


def _check(workdir: str, out: str, weight_bits: int, act_bits: int, modules: str,
           calibration_examples: int) -> None:
  """Every check before anything is read or written."""
  try:
    re.compile(modules)
  except re.error as e:
    raise ConfigError(f"--modules='{modules}' is not a regex: {e}") from None
  if weight_bits not in (0, *BITS):
    raise ConfigError(f"--weight_bits must be 4, 8 or 0 (float32: a LoRA export), got {weight_bits}")
  if act_bits not in (0, 8):
    raise ConfigError(f"--act_bits must be 0 or 8, got {act_bits}")
  if act_bits and not weight_bits:
    raise ConfigError("--act_bits needs --weight_bits 4 or 8")
  if calibration_examples < 1:
    raise ConfigError(f"--calibration_examples must be >= 1 (the training examples that set "
                      f"--act_bits' scales), got {calibration_examples}")
  name = config_lib.objective_name(load.read_config(workdir))
  if not checkpoint.saved_steps(workdir):
    raise ConfigError(f"no checkpoints in {workdir}: nothing to quantize")
  if name not in QUANTIZABLE:
    raise ConfigError(f"{workdir} holds a {name} run; quantize evaluates "
                      f"{', '.join(QUANTIZABLE)} runs")
  if not out or storage.absolute(out) == storage.absolute(workdir):
    raise ConfigError("--out must name a new directory, not the workdir")
  workdir_lib.check_new_directory(out, "--out")


def evaluated_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config of the plain model: QAT, LoRA and the distillation teacher off."""
  plain = ml_collections.ConfigDict(config.to_dict())
  plain.quantization.weight_bits = plain.quantization.act_bits = 0
  plain.lora.rank = 0
  plain.distill.teacher = ""
  return plain


def quantize_workdir(workdir: str, out: str, weight_bits: int = 8, act_bits: int = 0,
                     modules: str = ".*", calibration_examples: int = 512) -> dict[str, Any]:
  _check(workdir, out, weight_bits, act_bits, modules, calibration_examples)
  run = load.load(workdir)
  params = run.variables["params"]
  model_state = {k: v for k, v in run.variables.items() if k != "params"}
  sources = tasks.load(run.config)
  plain = evaluated_config(run.config)
  built = build_lib.build(plain, build_lib.example_of(sources.train), sources.num_outputs)
  state, shardings = built.create_state(plain.seed)
  stored = ptq.quantize_params(params, weight_bits, modules) if weight_bits else params
  if weight_bits and ptq.nbytes(stored) == ptq.nbytes(params):
    raise ConfigError(f"--modules='{modules}' matches no kernel (2 or more dimensions) of "
                      f"{workdir}'s model: nothing to quantize")
  evaluated = ptq.dequantize_params(stored, params) if weight_bits else params
  state = state.replace(params=jax.device_put(evaluated, shardings.params),
                        model_state=jax.device_put(model_state, shardings.model_state))
  scales = {}
  if act_bits:
    examples = sources.train
    inputs = examples.gather(np.arange(min(calibration_examples, len(examples))))["inputs"]
    scales = ptq.calibrate(lambda v, x: built.model.apply(v, x, train=False),
                           {"params": evaluated, **model_state}, jax.tree.map(jnp.asarray, inputs))
  evaluate = evaluation.Evaluator(plain, built, shardings, sources, out)
  with nn.intercept_methods(ptq.act_quantizer(scales, act_bits) if act_bits else
                            (lambda f, a, k, c: f(*a, **k))):
    results = evaluate(state, 0)  # compiles
    start = time.perf_counter()
    evaluate(state, 0)
    seconds = time.perf_counter() - start
  count = (sum(map(len, sources.eval.values())) if isinstance(sources.eval, dict)
           else len(sources.eval))
  results.update({
      "step": checkpoint.saved_steps(workdir)[-1], "quantized_from": storage.absolute(workdir),
      "weight_bits": weight_bits, "act_bits": act_bits, "lora_merged": bool(run.config.lora.rank),
      "num_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
      "model_bytes": ptq.nbytes(stored), "float_model_bytes": ptq.nbytes(params),
      "eval_examples_per_sec": count / seconds})
  if run.config.pruning.sparsity or run.config.pruning.n_m:
    results["sparsity"] = prune.sparsity(evaluated, run.config.pruning.dense)
  with workdir_lib.whole_directory(out, last=("config.json",)) as tmp:
    workdir_lib.write_json(os.path.join(tmp, "config.json"), config_lib.to_dict(plain))
    checkpoint.save_tree(os.path.join(tmp, load.QUANTIZED), {"params": stored,
                                                             "model_state": model_state})
    results["disk_bytes"] = _du(os.path.join(tmp, load.QUANTIZED))
    results = {k: writers.json_value(v) for k, v in results.items()}
    workdir_lib.write_json(os.path.join(tmp, "results.json"), results)
  return results


def _du(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
