"""Post-training quantization of a trained workdir, and export of a LoRA run as plain weights.

  python -m bigmodel_jax.quantize --workdir=runs/digits_resnet --out=runs/digits_resnet_int8
      [--weight_bits=8] [--act_bits=0] [--modules=.*] [--calibration_examples=512]

Reads WORKDIR's newest checkpoint (a LoRA run's adapters merged into its kernels first), rounds
every kernel matching --modules to --weight_bits (8 or 4; 0 keeps float32: a LoRA export), and
with --act_bits=8 every layer's input too, with static scales from calibration batches of the
training split (compression/ptq.py). Evaluates the result on the eval split and writes OUT:
config.json (the model as evaluated: no QAT, no adapters), quantized/ (an Orbax checkpoint of
{"params", "model_state"} whose quantized kernels are {"qvalue": int8 or packed int4, "scale"})
and results.json (the eval metrics, model_bytes, float_model_bytes, disk_bytes,
eval_examples_per_sec, ...). OUT is written whole or not at all; WORKDIR is only read.
"""

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags

from bigmodel_jax import cli
from bigmodel_jax import config as config_lib
from bigmodel_jax.config import ConfigError

QUANTIZABLE = ("classification", "lm", "seq2seq")
DIR = "quantized"  # OUT's checkpoint of the quantized parameters


def _check(workdir: str, out: str, weight_bits: int, act_bits: int, modules: str,
           calibration_examples: int) -> ml_collections.ConfigDict:
  """Every check before anything is read or written; the workdir's config."""
  import re

  from bigmodel_jax import checkpoint, sample
  from bigmodel_jax.compression.config import BITS

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
  config = sample.workdir_config(workdir)
  if not checkpoint.saved_steps(workdir):
    raise ConfigError(f"no checkpoints in {workdir}: nothing to quantize")
  if config_lib.objective_name(config) not in QUANTIZABLE:
    raise ConfigError(f"{workdir} holds a {config_lib.objective_name(config)} run; quantize "
                      f"evaluates {', '.join(QUANTIZABLE)} runs")
  if not out or os.path.abspath(out) == os.path.abspath(workdir):
    raise ConfigError("--out must name a new directory, not the workdir")
  from bigmodel_jax import workdir as workdir_lib
  workdir_lib.check_new_directory(out, "--out")
  return config


def evaluated_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config of the plain model: QAT, LoRA and the distillation teacher off."""
  plain = ml_collections.ConfigDict(config.to_dict())
  plain.quantization.weight_bits = plain.quantization.act_bits = 0
  plain.lora.rank = 0
  plain.distill.teacher = ""
  return plain


def _variables(config: ml_collections.ConfigDict, sources: Any, workdir: str) -> dict[str, Any]:
  """The newest checkpoint's parameters (LoRA adapters merged) and model state, on the host."""
  from bigmodel_jax import build as build_lib
  from bigmodel_jax import checkpoint
  from bigmodel_jax.compression import qwix_wrap

  source = ml_collections.ConfigDict(config.to_dict())
  source.distill.teacher = ""  # the student's variables only
  b = build_lib.build(source, build_lib.example_of(sources.train), sources.num_outputs)
  abstract = b.planned_state()
  saved = jax.device_get(checkpoint.load_variables(workdir, {
      "params": abstract.params, "model_state": abstract.model_state}))
  if config.lora.rank:
    saved["params"] = qwix_wrap.merge(saved["params"], config.lora.alpha, config.lora.rank)
  return saved


def quantize_workdir(workdir: str, out: str, weight_bits: int = 8, act_bits: int = 0,
                     modules: str = ".*", calibration_examples: int = 512) -> dict[str, Any]:
  import flax.linen as nn
  import jax.numpy as jnp

  from bigmodel_jax import build as build_lib
  from bigmodel_jax import checkpoint, evaluation, metrics, workdir as workdir_lib
  from bigmodel_jax.compression import prune, ptq
  from bigmodel_jax.data import tasks

  config = _check(workdir, out, weight_bits, act_bits, modules, calibration_examples)
  sources = tasks.load(config)
  saved = _variables(config, sources, workdir)
  plain = evaluated_config(config)
  b = build_lib.build(plain, build_lib.example_of(sources.train), sources.num_outputs)
  state, shardings = b.create_state(plain.seed)
  params = saved["params"]
  stored = ptq.quantize_params(params, weight_bits, modules) if weight_bits else params
  if weight_bits and ptq.nbytes(stored) == ptq.nbytes(params):
    raise ConfigError(f"--modules='{modules}' matches no kernel (2 or more dimensions) of "
                      f"{workdir}'s model: nothing to quantize")
  evaluated = ptq.dequantize_params(stored, params) if weight_bits else params
  state = state.replace(params=jax.device_put(evaluated, shardings.params),
                        model_state=jax.device_put(saved["model_state"], shardings.model_state))
  scales = {}
  if act_bits:
    inputs = sources.train.gather(np.arange(min(calibration_examples, len(sources.train))))["inputs"]
    scales = ptq.calibrate(lambda v, x: b.model.apply(v, x, train=False),
                           {"params": evaluated, **saved["model_state"]},
                           jax.tree.map(jnp.asarray, inputs))
  evaluate = evaluation.Evaluator(plain, b, shardings, sources, out)
  with nn.intercept_methods(ptq.act_quantizer(scales, act_bits) if act_bits else
                            (lambda f, a, k, c: f(*a, **k))):
    results = evaluate(state, 0)  # compiles
    start = time.perf_counter()
    evaluate(state, 0)
    seconds = time.perf_counter() - start
  count = sum(map(len, sources.eval.values())) if config.tasks else len(sources.eval)
  results.update({
      "step": checkpoint.saved_steps(workdir)[-1], "quantized_from": os.path.abspath(workdir),
      "weight_bits": weight_bits, "act_bits": act_bits, "lora_merged": bool(config.lora.rank),
      "num_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
      "model_bytes": ptq.nbytes(stored), "float_model_bytes": ptq.nbytes(params),
      "eval_examples_per_sec": count / seconds})
  if config.pruning.sparsity or config.pruning.n_m:
    results["sparsity"] = prune.sparsity(evaluated, config.pruning.dense)
  with workdir_lib.whole_directory(out) as tmp:
    workdir_lib.write_json(os.path.join(tmp, "config.json"), config_lib.to_dict(plain))
    checkpoint.save_tree(os.path.join(tmp, DIR), {"params": stored,
                                                  "model_state": saved["model_state"]})
    results["disk_bytes"] = _du(os.path.join(tmp, DIR))
    results = {k: metrics.json_value(v) for k, v in results.items()}
    workdir_lib.write_json(os.path.join(tmp, "results.json"), results)
  return results


def _du(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def load(out: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """A quantize OUT directory's config and float variables {"params", **model_state}."""
  import flax.linen as nn
  import orbax.checkpoint as ocp

  from bigmodel_jax import models, sample
  from bigmodel_jax.compression import ptq
  from bigmodel_jax.data import pipeline

  config = sample.workdir_config(out)
  example, num_outputs = pipeline.input_spec(config.data)
  model = models.build(config.model, num_outputs)
  abstract = jax.eval_shape(lambda x: nn.unbox(model.init(jax.random.PRNGKey(0), x, train=False)),
                            example)
  with ocp.PyTreeCheckpointer() as ckpt:
    saved = ckpt.restore(os.path.abspath(os.path.join(out, DIR)))
  params = ptq.dequantize_params(saved["params"], abstract["params"])
  return config, {"params": params, **saved.get("model_state", {})}


def main(argv: list[str]) -> None:
  f = flags.FLAGS

  def body() -> None:
    results = quantize_workdir(f.workdir, f.out, f.weight_bits, f.act_bits, f.modules,
                               f.calibration_examples)
    from bigmodel_jax import metrics
    metrics.console(f"Wrote {f.out}: " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items()
        if k.startswith("eval/") or k.endswith("bytes") or k == "eval_examples_per_sec"))

  cli.run_command(argv, body)


def run() -> None:
  flags.DEFINE_string("workdir", None, "A trained classifier's or language model's workdir.",
                      required=True)
  flags.DEFINE_string("out", None, "The new directory to write.", required=True)
  flags.DEFINE_integer("weight_bits", 8, "4 or 8; 0 = float32 (export a LoRA run merged).")
  flags.DEFINE_integer("act_bits", 0, "0 or 8: layer inputs too, with calibrated static scales.")
  flags.DEFINE_string("modules", ".*", "A regex searched in parameter paths: the kernels quantized.")
  flags.DEFINE_integer("calibration_examples", 512, "Training examples that set activation scales.")
  app.run(main)


if __name__ == "__main__":
  run()
