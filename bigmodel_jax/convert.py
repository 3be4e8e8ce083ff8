"""Pretrained weights in and out: other ecosystems' checkpoints as workdirs, and back.

  python -m bigmodel_jax.convert --source=PATH --config=configs/FILE.py:VARIANT --workdir=W
  python -m bigmodel_jax.convert --workdir=W --to=hf|torchvision --out=DIR

In: PATH is a torchvision state_dict (torch.save file, read without torch), a safetensors file or
a Hugging Face model directory (config.json + model.safetensors; gpt2 and llama). W becomes a
workdir of converted weights: config.json, checkpoints/0 (parameters and BatchNorm statistics),
convert.json (what was mapped) and the directory's tokenizer.json if it has one. Train from it
with --config.init_from=W; `predict` computes its outputs. The config must describe the
checkpoint's architecture: a tensor of another shape, a tensor the model needs that the
checkpoint lacks, or a Hugging Face option the config does not match (an epsilon, the rotary
base) is an error naming it, and nothing is written.

Out: DIR gets model.safetensors under the other ecosystem's names (torchvision: load it with
`model.load_state_dict(safetensors.torch.load_file(...))`; hf: with config.json, the directory
that `AutoModelForCausalLM.from_pretrained(DIR)` loads), and W's tokenizer.json if any.
"""

import json
import os
import shutil
import sys
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import cli
from bigmodel_jax import config as config_lib
from bigmodel_jax.config import ConfigError
from bigmodel_jax.pretrained import families, files, hf_config

REPORT = "convert.json"  # in a converted workdir: what was mapped, and the number of outputs


def abstract_variables(model: Any, example: Any) -> dict[str, Any]:
  """{collection: {path: ShapeDtypeStruct}} of a model's variables in eval mode."""
  import flax.linen as nn
  import jax
  from flax.traverse_util import flatten_dict

  tree = jax.eval_shape(lambda x: nn.unbox(model.init(jax.random.PRNGKey(0), x, train=False)),
                        example)
  return flatten_dict(tree, sep="/")


def num_outputs_of(family: str, tensors: files.Tensors) -> int:
  """Classes (the classifier's rows) or the vocabulary (the embedding's rows)."""
  name = {"torchvision_resnet": "fc.weight", "torchvision_densenet": "classifier.weight",
          "torchvision_vit": "heads.head.weight", "gpt2": "transformer.wte.weight",
          "llama": "model.embed_tokens.weight"}[family]
  if name not in tensors:
    raise ConfigError(f"the checkpoint has no tensor {name}: is it a {family} checkpoint?")
  return int(tensors[name].shape[0])


def _normalized(family: str, tensors: files.Tensors) -> files.Tensors:
  """Hugging Face base-model files (GPT2Model, LlamaModel) lack the task model's prefix."""
  prefix = {"gpt2": "transformer.", "llama": "model."}.get(family)
  if prefix and not any(k.startswith(prefix) for k in tensors):
    return {(k if k == "lm_head.weight" else prefix + k): v for k, v in tensors.items()}
  return tensors


def import_variables(family: str, tensors: files.Tensors,
                     abstract: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, list]]:
  """Our variables {path: array} from their tensors, and what was mapped / ignored / left over."""
  used, out = set(), {}
  wanted = {path: families.tensor_of(family, path, len(spec.shape)) for path, spec in abstract.items()}
  order = {name: i for i, name in enumerate(tensors)}  # errors name the checkpoint's first misfit
  for path in sorted(wanted, key=lambda p: order.get(wanted[p].name, len(order))):
    t, spec = wanted[path], abstract[path]
    if t.name not in tensors:
      raise ConfigError(f"the checkpoint has no tensor {t.name} (for {path} {tuple(spec.shape)}): "
                        f"a checkpoint of another architecture, or a config that does not match it")
    theirs = tensors[t.name]
    want = families.their_shape(t, tuple(spec.shape))
    if tuple(theirs.shape) != want:
      raise ConfigError(f"tensor {t.name} has shape {tuple(theirs.shape)} in the checkpoint; this "
                        f"config's {path} needs {want}: a checkpoint of another architecture, or "
                        f"a config that does not match it")
    out[path] = families.to_ours(t, np.asarray(theirs, np.float32), tuple(spec.shape))
    used.add(t.name)
  ignored = sorted(k for k in tensors if k not in used and families.IGNORED.fullmatch(k))
  tied = "lm_head.weight"
  if tied in tensors and tied not in used:  # an output layer tied to the embedding
    embedding = next(k for k in tensors if k.endswith(("wte.weight", "embed_tokens.weight")))
    if not np.array_equal(tensors[tied], tensors[embedding]):
      raise ConfigError("the checkpoint's lm_head.weight differs from its embedding: set "
                        "--config.model.tie_embeddings=False")
    ignored.append(tied)
  left = sorted(set(tensors) - used - set(ignored))
  return out, {"mapped": sorted(used), "ignored": ignored, "left_over": left}


def _example(config: ml_collections.ConfigDict) -> Any:
  import jax
  from bigmodel_jax.data import pipeline

  if config.model.name == "decoder_lm":
    return jax.ShapeDtypeStruct((1, min(config.data.seq_len, config.model.max_len)), np.int32)
  example, _ = pipeline.input_spec(config.data)
  return example


def convert_in(source: str, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  from flax.traverse_util import unflatten_dict

  from bigmodel_jax import checkpoint, models, workdir as workdir_lib

  workdir_lib.check_new_directory(workdir, "--workdir")
  if config.model.get("scan_layers"):
    raise ConfigError("convert writes one parameter set per layer: set "
                      "--config.model.scan_layers=False (a run may scan after init_from)")
  tensors, hf = files.read(source)
  family = families.family_of(config.model, hf)
  if hf is not None:
    hf_config.check(family, hf, config.model)
  tensors = _normalized(family, tensors)
  outputs = num_outputs_of(family, tensors)
  model = models.build(config.model, outputs)
  with models.init_errors_as_config_errors(config.model.name, _example(config)):
    abstract = abstract_variables(model, _example(config))
  flat, report = import_variables(family, tensors, abstract)
  tree = unflatten_dict(flat, sep="/")
  variables = {"params": tree.pop("params"), "model_state": tree}
  report = {"source": os.path.abspath(source), "family": family, "num_outputs": outputs, **report}
  tokenizer = os.path.join(source, "tokenizer.json") if os.path.isdir(source) else ""
  with workdir_lib.whole_directory(workdir) as tmp:
    workdir_lib.write_json(os.path.join(tmp, "config.json"), config_lib.to_dict(config))
    checkpoint.save_tree(os.path.join(checkpoint.directory(tmp), "0", "state"), variables)
    if tokenizer and os.path.exists(tokenizer):
      shutil.copy(tokenizer, os.path.join(tmp, "tokenizer.json"))
      report["tokenizer"] = "tokenizer.json"
    workdir_lib.write_json(os.path.join(tmp, REPORT), report)
  return report


def load(workdir: str) -> tuple[ml_collections.ConfigDict, Any, dict[str, Any]]:
  """(config, model, {"params", **model_state}) of a workdir's newest checkpoint, on the host:
  a converted workdir or a trained one."""
  import jax
  from flax.traverse_util import unflatten_dict

  from bigmodel_jax import checkpoint, models, sample

  config = sample.workdir_config(workdir)
  report = os.path.join(workdir, REPORT)
  if os.path.exists(report):
    with open(report) as f:
      outputs = json.load(f)["num_outputs"]
  else:
    from bigmodel_jax.data import pipeline
    _, outputs = pipeline.input_spec(config.data)
  model = models.build(config.model, outputs)
  tree = unflatten_dict(abstract_variables(model, _example(config)), sep="/")
  params = tree.pop("params")
  saved = jax.device_get(checkpoint.load_variables(workdir, {"params": params, "model_state": tree}))
  return config, model, {"params": saved["params"], **saved["model_state"]}


def convert_out(workdir: str, to: str, out: str) -> dict[str, Any]:
  from flax.traverse_util import flatten_dict

  if not out:
    raise ConfigError("--to needs --out, the new directory to write")
  from bigmodel_jax import workdir as workdir_lib
  workdir_lib.check_new_directory(out, "--out")
  config, model, variables = load(workdir)
  family = families.family_of(config.model, None)
  if (to == "hf") != (families.FAMILIES[family][2] == "hf"):
    raise ConfigError(f"model '{config.model.name}' exports to "
                      f"{families.FAMILIES[family][2]}, not {to}")
  if to == "hf":  # the model must be one that transformers computes the same way
    hf_config.check(family, hf_config.of(family, config.model, variables), config.model,
                    exporting=True)
  flat = flatten_dict({"params": variables["params"],
                       **{k: v for k, v in variables.items() if k != "params"}}, sep="/")
  parts: dict[str, dict[int, np.ndarray]] = {}
  axes: dict[str, int] = {}
  for path, value in flat.items():
    t = families.tensor_of(family, path, np.ndim(value))
    axis, index, _ = t.part or (0, 0, 1)
    parts.setdefault(t.name, {})[index] = families.to_theirs(t, np.asarray(value, np.float32))
    axes[t.name] = axis
  tensors = {name: np.concatenate([p[i] for i in sorted(p)], axis=axes[name]) if len(p) > 1
             else p[0] for name, p in parts.items()}
  if family.startswith("torchvision"):  # BatchNorm's counter, which load_state_dict expects
    for name in [n for n in tensors if n.endswith(".running_mean")]:
      tensors[name[:-len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
  with workdir_lib.whole_directory(out) as tmp:
    files.write_safetensors(os.path.join(tmp, "model.safetensors"), tensors, {"format": "pt"})
    if to == "hf":
      with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf_config.of(family, config.model, variables), f, indent=2)
    tokenizer = os.path.join(workdir, "tokenizer.json")
    if os.path.exists(tokenizer):
      shutil.copy(tokenizer, os.path.join(tmp, "tokenizer.json"))
  return {"family": family, "tensors": len(tensors)}


def main(argv: list[str]) -> None:
  f = flags.FLAGS

  def body() -> None:
    from bigmodel_jax import metrics

    if f.to and f.source:
      raise ConfigError("use one of --source (a checkpoint to convert into --workdir) or --to "
                        "(export --workdir to --out), not both")
    if f.to:
      done = convert_out(f.workdir, f.to, f.out)
      metrics.console(f"Wrote {f.out}: {done['tensors']} tensors ({done['family']}, {f.to})")
      return
    if not f.source or f.config is None:
      raise ConfigError("converting in needs --source and --config (or --to to export)")
    config_lib.check_values(f.config)
    r = convert_in(f.source, f.config, f.workdir)
    metrics.console(
        f"Converted {r['source']} ({r['family']}) into {f.workdir}: {len(r['mapped'])} "
        f"tensors mapped, {len(r['ignored'])} ignored ({', '.join(r['ignored'][:3]) or 'none'}"
        f"{' ...' if len(r['ignored']) > 3 else ''}), {len(r['left_over'])} left over "
        f"({', '.join(r['left_over']) or 'none'}), 0 missing")

  cli.run_command(argv, body)


def run() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment file of the architecture.",
                                  lock_config=True)
  flags.DEFINE_string("source", None, "A checkpoint file or Hugging Face directory.")
  flags.DEFINE_string("workdir", None, "The workdir to write (in) or read (out).", required=True)
  flags.DEFINE_enum("to", None, ["hf", "torchvision"], "Export W to this ecosystem.")
  flags.DEFINE_string("out", None, "--to: the new directory to write.")
  flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
  app.run(main, flags_parser=_parse)


def _parse(argv: list[str]) -> list[str]:
  if any(a.startswith("--config") for a in argv):
    return cli.parse_command_line(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
