"""Pretrained weights in and out (`python -m bigmodel_jax.convert`): other ecosystems'
checkpoints as workdirs, and back.

In: a torchvision state_dict (torch.save file, read without torch), a safetensors file or a
Hugging Face model directory (config.json + model.safetensors; gpt2, llama and mixtral) becomes a
workdir of converted weights: config.json, checkpoints/0/state (parameters and BatchNorm
statistics), convert.json (what was mapped, the number of outputs) and the directory's
tokenizer.json if it has one; runs/load.py reads it like a trained workdir. The config must
describe the checkpoint's architecture: a tensor of another shape, a tensor the model needs
that the checkpoint lacks, or a Hugging Face option the config does not match (an epsilon, the
rotary base) is an error naming it, and nothing is written.

Out: model.safetensors under the other ecosystem's names (torchvision: load it with
`model.load_state_dict(safetensors.torch.load_file(...))`; hf: with config.json, the directory
that `AutoModelForCausalLM.from_pretrained(DIR)` loads), and the workdir's tokenizer.json if any.
The tensor names and layouts of each family: families.py; files: files.py.
"""

import json
import os
from typing import Any

import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bigmodel_jax import config as config_lib
from bigmodel_jax import models, storage
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.data import tokenizer
from bigmodel_jax.pretrained import architecture, families, files, hf_config
from bigmodel_jax.runs import checkpoint, load
from bigmodel_jax.runs import workdir as workdir_lib


def num_outputs_of(family: str, tensors: files.Tensors) -> int:
  """Classes (the classifier's rows) or the vocabulary (the embedding's rows)."""
  name = {"torchvision_resnet": "fc.weight", "torchvision_densenet": "classifier.weight",
          "torchvision_vit": "heads.head.weight", "gpt2": "transformer.wte.weight",
          "llama": "model.embed_tokens.weight", "mixtral": "model.embed_tokens.weight"}[family]
  if name not in tensors:
    raise ConfigError(f"the checkpoint has no tensor {name}: is it a {family} checkpoint?")
  return int(tensors[name].shape[0])


def _normalized(family: str, tensors: files.Tensors) -> files.Tensors:
  """Hugging Face base-model files (GPT2Model, LlamaModel) lack the task model's prefix."""
  prefix = {"gpt2": "transformer.", "llama": "model.", "mixtral": "model."}.get(family)
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


def base_config(hf: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config a Hugging Face checkpoint converts under without --config: the defaults, a
  decoder_lm (its options come from config.json) reading text of its max_len."""
  config = config_lib.default_config()
  config.model.name = "decoder_lm"
  config.model.max_len = int(hf.get("n_positions") or hf.get("max_position_embeddings") or 2048)
  config.data.update({"name": "textdir", "kind": "lm", "input_key": "text",
                      "seq_len": config.model.max_len})
  return config


def convert_in(source: str, config: ml_collections.ConfigDict | None,
               workdir: str) -> dict[str, Any]:
  """The checkpoint at `source` as a converted workdir (see the module's docstring); a report
  of the tensors mapped, ignored and left over, and of the architecture the checkpoint gave:
  "architecture" (its model options), "taken" (those that differed from the config's)."""
  workdir_lib.check_new_directory(workdir, "--workdir")
  with storage.local_copy(source) as local:  # a gs:// source downloaded first
    tensors, hf = files.read(local)
    tokenizer_file = tokenizer.in_directory(local) if os.path.isdir(local) else ""
    tokenizer_bytes = storage.read_bytes(tokenizer_file) if tokenizer_file else b""
  if config is None and hf is None:
    raise ConfigError("a checkpoint without a Hugging Face config.json (torchvision's, a "
                      "safetensors file) needs --config: its model family and data, e.g. "
                      "--config=configs/imagenet2012.py:resnet50")
  config = base_config(hf) if config is None else config
  if config.model.get("scan_layers"):
    raise ConfigError("convert writes one parameter set per layer: set "
                      "--config.model.scan_layers=False (a run may scan after init_from)")
  family = families.family_of(config.model, None if hf is None else hf_config.family_of(hf))
  tensors = families.stacked_experts(_normalized(family, tensors))
  outputs = num_outputs_of(family, tensors)
  wanted = (hf_config.architecture(family, hf) if hf is not None else
            architecture.of_torchvision(family, tensors, config))
  config, taken = architecture.adopt(config, wanted)
  if tokenizer_file:  # the copy this workdir keeps
    with config.unlocked():
      config.data.tokenizer = storage.absolute(
          storage.join(workdir, tokenizer.file_name(tokenizer_file)))
  model = models.build(config.model, outputs)
  example = load.converted_example(config)
  with models.init_errors_as_config_errors(config.model.name, example):
    abstract = flatten_dict(load.abstract_variables(model, example), sep="/")
  flat, report = import_variables(family, tensors, abstract)
  tree = unflatten_dict(flat, sep="/")
  variables = {"params": tree.pop("params"), "model_state": tree}
  report = {"source": storage.absolute(source), "family": family, "num_outputs": outputs,
            **report, "architecture": wanted, "taken": taken}
  with workdir_lib.whole_directory(workdir, last=("config.json", load.CONVERTED)) as tmp:
    workdir_lib.write_json(os.path.join(tmp, "config.json"), config_lib.to_dict(config))
    checkpoint.save_tree(os.path.join(checkpoint.directory(tmp), "0", "state"), variables)
    checkpoint.mark_complete(os.path.join(checkpoint.directory(tmp), "0"))
    if tokenizer_file:
      report["tokenizer"] = tokenizer.file_name(tokenizer_file)
      storage.write(os.path.join(tmp, report["tokenizer"]), tokenizer_bytes)
    workdir_lib.write_json(os.path.join(tmp, load.CONVERTED), report)
  return report


def convert_out(workdir: str, to: str, out: str) -> dict[str, Any]:
  """A trained or converted workdir's newest parameters under another ecosystem's names in the
  new directory `out` (hf: with config.json); its family and tensor count."""
  if not out:
    raise ConfigError("--to needs --out, the new directory to write")
  workdir_lib.check_new_directory(out, "--out")
  run = load.load(workdir)
  config, variables = run.config, run.variables
  family = families.family_of(config.model, None)
  if (to == "hf") != (families.FAMILIES[family][2] == "hf"):
    raise ConfigError(f"model '{config.model.name}' exports to "
                      f"{families.FAMILIES[family][2]}, not {to}")
  # the model must be one that the other library computes the same way
  fixed = (hf_config.architecture(family, hf_config.of(family, config.model, variables))
           if to == "hf" else architecture.TORCHVISION_FIXED.get(family, {}))
  library = "transformers'" if to == "hf" else "torchvision's"
  for key, ours, theirs in architecture.differences(config.model, fixed):
    raise ConfigError(f"{library} {family} computes model.{key}={theirs!r}; this model has "
                      f"{ours!r}, so it cannot be exported as {family}")
  flat = flatten_dict({"params": variables["params"],
                       **{k: v for k, v in variables.items() if k != "params"}}, sep="/")
  parts: dict[str, dict[int, np.ndarray]] = {}
  axes: dict[str, int] = {}
  for path, value in flat.items():
    t = families.tensor_of(family, path, np.ndim(value))
    axis, index, _ = t.part or (0, 0, 1)
    parts.setdefault(t.name, {})[index] = families.to_theirs(t, np.asarray(value, np.float32))
    axes[t.name] = axis
  tensors = families.unstacked_experts(
      {name: np.concatenate([p[i] for i in sorted(p)], axis=axes[name]) if len(p) > 1 else p[0]
       for name, p in parts.items()})
  if family.startswith("torchvision"):  # BatchNorm's counter, which load_state_dict expects
    for name in [n for n in tensors if n.endswith(".running_mean")]:
      tensors[name[:-len("running_mean")] + "num_batches_tracked"] = np.zeros((), np.int64)
  with workdir_lib.whole_directory(out, last=("config.json", "model.safetensors")) as tmp:
    files.write_safetensors(os.path.join(tmp, "model.safetensors"), tensors, {"format": "pt"})
    if to == "hf":
      with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(hf_config.of(family, config.model, variables), f, indent=2)
    kept = tokenizer.in_directory(workdir)
    if kept:
      storage.write(os.path.join(tmp, tokenizer.file_name(kept)), storage.read_bytes(kept))
  return {"family": family, "tensors": len(tensors)}
