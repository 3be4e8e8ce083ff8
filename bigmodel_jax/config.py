"""The default config every experiment file starts from, and the checks on configs.

Bad input gets a `faults.ConfigError`: `main.py` prints its message on one line and exits with status 2.
"""

import difflib
import importlib.util
import json
import math
import os
from typing import Any

import ml_collections
from ml_collections import config_dict

from bigmodel_jax import writers
from bigmodel_jax.compression import config as compression
from bigmodel_jax.config_rules import CHOICES, NUMERIC_RULES, OBJECTIVES, is_finite, is_int
from bigmodel_jax.faults import ConfigError


# Keys that may differ between a workdir's config.json and a rerun on it: they change how long a
# run goes and how often it reports, not what one step computes.
RESUME_SAFE_KEYS = ("total_steps", "total_epochs", "log_every", "eval_every", "checkpoint_every",
                    "checkpoint_keep", "nan_policy", "steps_per_call", "data.workers", "writers")


# The device mesh's axes, outermost first (trainer/sharding.py lays them out in this order).
MESH_AXES = ("data", "stage", "fsdp", "expert", "context", "tensor")


def default_config() -> ml_collections.ConfigDict:
  """Every key a config has, so that scripts can rely on them; experiment files override."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.label = ""  # a short name for this experiment in reports (bigmodel_jax/report.py)
  c.batch_size = 128  # global, over all processes and devices
  c.eval_batch_size = 1000  # global; the last batch is padded and masked
  c.total_steps = 1000
  c.total_epochs = config_dict.placeholder(float)  # when set, wins over total_steps
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.checkpoint_keep = 3
  c.init_from = ""  # a workdir whose newest parameters warm-start this run (misfits start fresh)
  c.init_architecture = True  # init_from a converted workdir: take its model options and tokenizer
  c.init_into = ""  # the top-level parameter group they go into ("": all; LiT: "image")
  c.freeze = ""  # comma-separated regexes over parameter paths ("conv_0,conv_1"): not updated
  c.nan_policy = "stop"  # non-finite loss/gradients: stop (exit 3) or skip the update and count it
  c.writers = writers.DEFAULT  # where logged rows go (writers.py): jsonl, tensorboard, wandb

  _add_parallelism(c)
  c.model = ml_collections.ConfigDict({"name": ""})  # other keys go to the model's constructor
  # What is learned (objectives/): "" = data.kind's cross entropy (paired: classification);
  # vae, gan, diffusion, contrastive, captioning. Other keys go to the objective's constructor.
  c.objective = ml_collections.ConfigDict({"name": ""})
  # Generative objectives: samples scored at every eval by a classifier of the data set
  # (trainer/judge.py): per_class samples of each class; judge: a classifier's workdir
  # ("" = the pinned one for the data set, trained on first use).
  c.samples = ml_collections.ConfigDict({"per_class": 100, "judge": ""})

  c.data = ml_collections.ConfigDict()
  c.data.name = ""  # a TFDS name: ours (mnist1d, digits, pycode) or the catalogue's (mnist, cifar10)
  c.data.kind = "classification"  # lm: next bytes; seq2seq: text -> text; paired: image + text
  c.data.seq_len = 128  # lm: tokens per window; seq2seq: longest input
  c.data.tokenizer = ""  # lm (data/tokenizer.py): "" bytes, "bpe:N" (trained), a tokenizer.json
  c.data.packing = False  # lm: documents kept apart in the windows (segment ids)
  c.data.text_dir, c.data.text_field = "", "text"  # textdir: the directory; .jsonl/.parquet's
  # text field (data/corpus.py: .txt, .jsonl, .jsonl.gz, .jsonl.zst, .parquet)
  # lm: a weighted mixture of corpora (data/lm.py), name -> {"weight": w, "text_dir": DIR, ...};
  # empty = config.data is the one corpus
  c.data.corpora = ml_collections.ConfigDict()
  c.data.path = ""  # image_folder: a folder of SPLIT/CLASS/images (train/, val/)
  c.data.target_len = 16  # seq2seq: longest answer + 1 (EOS)
  c.data.data_dir = ""  # "" = TFDS default ($TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.data.train_split = "train"
  c.data.eval_split = "test"
  c.data.input_key = "image"
  c.data.label_key = "label"
  c.data.text_key = "text"  # paired: the text feature (T word ids, or K x T captions)
  c.data.scale = 1.0  # inputs are multiplied by this (1/255 for uint8 images)
  c.data.mean = ()  # per channel, subtracted after scaling (e.g. ImageNet's); () = none
  c.data.std = ()  # per channel, divides after the mean; () = none
  c.data.image_size = 0  # > 0: images of any size are cropped to image_size x image_size
  c.data.eval_crop = 0.875  # image_size: eval resizes the shorter side to image_size / eval_crop
  c.data.augment = ""  # training only: flip, crop_flip (pad 4 + crop; CIFAR), inception_crop
  c.data.cache = False  # decode the training split into memory once (small data sets)
  c.data.on_device = False  # keep that split on the devices; each step samples its batch there
  # (data/on_device.py: same order, no host work per step; needs cache and no random augment)
  c.data.workers = -1  # Grain worker processes making training batches (data/iterator.py);
  # -1: one per core where images are decoded from files, else none (reader threads); same batches.
  # lm: also the processes tokenizing a corpus into its token store (-1: one per core)

  # Multi-task (data/tasks.py, models/multitask.py): name -> {"weight": w, data overrides...};
  # empty = config.data is the one task. The model becomes the shared trunk with
  # task_features outputs, followed by a head per task.
  c.tasks = ml_collections.ConfigDict()
  c.task_features = 256

  c.optimizer = optimizer_defaults()
  c.schedule = schedule_defaults()

  # Objectives with several networks (a GAN's generator and discriminator): config.optimizer and
  # config.schedule train the first; optimizers.NAME (optimizer_config()) each other one.
  c.optimizers = ml_collections.ConfigDict()
  compression.add_defaults(c)  # quantization, pruning, distill, lora
  return c


def _add_parallelism(c: ml_collections.ConfigDict) -> None:
  """How a step runs over the devices (trainer/sharding.py, models/pipeline.py)."""
  # A preset, mesh axis sizes (None: the preset's; -1 fills the rest), optional logical-axis
  # rules over the preset's ("mlp=tensor,embed=fsdp").
  c.sharding = "dp"  # dp, fsdp, tp, fsdp_tp, ep, fsdp_ep
  c.mesh = ml_collections.ConfigDict({a: config_dict.placeholder(int) for a in MESH_AXES})
  c.sharding_rules = ""
  # Pipeline stages (mesh.stage > 1: the scanned Transformer blocks split over `stage`):
  # microbatches per step (0: as many as stages); schedule: gpipe, circular (repeats R > 1,
  # each stage holding R groups of layers) or 1f1b (models/pipeline.py: the step runs a
  # microbatch's backward pass as soon as it can, each stage keeping at most 2P - 1
  # microbatches' inputs). The idle share of a step, (P-1)/(M R + P - 1), is printed.
  c.pipeline = ml_collections.ConfigDict({"microbatches": 0, "repeats": 1, "schedule": "gpipe"})
  c.parallel = ml_collections.ConfigDict()
  c.parallel.strategy = "jit"  # jit (over the mesh) or pmap (classic replicated data parallelism)
  c.grad_accum_steps = 1  # micro-batches per update (the batch is split; same update)
  c.steps_per_call = 1  # updates per jitted call (same updates; amortizes the per-call cost of
  # sub-millisecond steps); divides log_every, eval_every and checkpoint_every
  c.dtype = "float32"  # computation dtype (bfloat16: mixed precision; parameters stay float32)


def optimizer_defaults() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = "adam"  # sgd, momentum, nesterov, adam, adamw, lamb
  o.learning_rate = 1e-3  # peak value; the schedule shapes it
  o.momentum = 0.9
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-8
  o.weight_decay = 0.0  # applied to kernels only, never biases or norm scales
  o.grad_clip_norm = 0.0  # 0 = no clipping
  return o


def schedule_defaults() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.name = "constant"  # constant, linear, cosine, step, warmup_cosine, rsqrt
  s.warmup_steps = 0
  s.end_factor = 0.0  # final lr as a fraction of the peak (linear, cosine)
  s.boundaries = (0.5, 0.75)  # step: fractions of total_steps
  s.decay_factor = 0.1  # step: lr is multiplied by this at each boundary
  return s


def optimizer_config(schedule: dict[str, Any] | None = None,
                     **overrides: Any) -> ml_collections.ConfigDict:
  """config.optimizers.NAME: config.optimizer's keys, a `schedule` (config.schedule's), overrides."""
  c = optimizer_defaults()
  c.update(overrides)
  c.schedule = schedule_defaults()
  c.schedule.update(schedule or {})
  return c


def from_variant(variants: dict[str, dict[str, Any]], arg: str) -> ml_collections.ConfigDict:
  """default_config() with config.model set to variants[arg]: the start of every config file."""
  if arg not in variants:
    raise ValueError(f"unknown variant '{arg}'; known: {', '.join(variants)}")
  c = default_config()
  c.model.update(variants[arg])
  return c


def total_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """total_epochs (when set) converted to steps, else total_steps."""
  if config.total_epochs is not None:
    if not (is_finite(config.total_epochs) and config.total_epochs > 0):
      raise ConfigError(f"total_epochs must be a finite number > 0, got {config.total_epochs}")
    return math.ceil(config.total_epochs * num_train_examples / config.batch_size)
  if config.total_steps <= 0:
    raise ConfigError(f"total_steps must be positive, got {config.total_steps}")
  return config.total_steps


MULTIMODAL_MODELS = ("fusion", "dual_encoder", "captioner")  # read data.kind=paired, only it


def objective_name(config: ml_collections.ConfigDict) -> str:
  return config.objective.name or {"paired": "classification"}.get(config.data.kind,
                                                                   config.data.kind)


def check_values(config: ml_collections.ConfigDict) -> None:
  """Checks that need no data, model or devices: every numeric key's range, the named choices,
  and how keys go together. Cheap: main.py runs them before JAX is imported."""
  flat = flatten(config.to_dict())
  for key, (ok, what) in NUMERIC_RULES.items():
    if key in flat and not ok(flat[key]):
      raise ConfigError(f"{key} must be {what}, got {flat[key]!r}")
  if config.total_epochs is None and not (is_int(config.total_steps) and config.total_steps > 0):
    raise ConfigError(f"total_steps must be positive, got {config.total_steps}")
  for key, names in CHOICES.items():
    if flat[key] not in names:
      raise ConfigError(f"{key} must be {', '.join(names[:-1])} or {names[-1]}, got '{flat[key]}'")
  if config.steps_per_call > 1:
    if config.parallel.strategy != "jit":
      raise ConfigError("steps_per_call > 1 needs parallel.strategy=jit")
    uneven = [f"{k}={config[k]}" for k in ("log_every", "eval_every", "checkpoint_every")
              if config[k] % config.steps_per_call]
    if uneven:
      raise ConfigError(f"steps_per_call={config.steps_per_call} must divide "
                        f"{', '.join(uneven)}: logs, evaluations and checkpoints happen between calls")
  if config.parallel.strategy == "pmap" and config.sharding != "dp":
    raise ConfigError(f"parallel.strategy=pmap replicates parameters: it needs sharding=dp, "
                      f"not '{config.sharding}'")
  writers.names_of(config.writers)
  if not config.model.name:
    raise ConfigError("model.name is empty: set it in the config file or with --config.model.name")
  if not config.data.name and not config.tasks:
    raise ConfigError("data.name is empty: set it in the config file or with --config.data.name")
  if config.batch_size % config.grad_accum_steps:
    raise ConfigError(f"batch_size={config.batch_size} / grad_accum_steps="
                      f"{config.grad_accum_steps} must be a whole micro-batch")
  if config.data.on_device and config.parallel.strategy == "pmap":
    raise ConfigError("data.on_device needs parallel.strategy=jit")
  if config.data.packing and (config.data.kind, config.model.name) != ("lm", "decoder_lm"):
    raise ConfigError("data.packing feeds document boundaries to a decoder_lm (data.kind=lm)")
  if config.data.tokenizer and config.data.kind != "lm":
    raise ConfigError(f"data.tokenizer is for data.kind=lm, not {config.data.kind}")
  if config.data.corpora and config.data.kind != "lm":
    raise ConfigError(f"data.corpora mixes language-model corpora (data.kind=lm), not "
                      f"{config.data.kind}")
  base_name = config.data.name.split(":")[0].split("/")[0]
  for key, reader in (("text_dir", "textdir"), ("path", "image_folder")):
    if config.data[key] and base_name != reader:
      raise ConfigError(f"data.{key} is read by data set {reader}, not '{config.data.name}': "
                        f"set --config.data.name={reader}, or leave data.{key} empty")
  _check_modalities(config)
  _check_objective(config)
  compression.check(config)


def _check_modalities(config: ml_collections.ConfigDict) -> None:
  """Two-modality models and paired data go together; LiT's warm start; the contrastive batch."""
  if config.init_into and not config.init_from:
    raise ConfigError(f"init_into='{config.init_into}' needs init_from: the workdir whose "
                      "parameters start that part of the model (e.g. a classifier for LiT)")
  multimodal = config.model.name in MULTIMODAL_MODELS
  if multimodal != (config.data.kind == "paired"):
    raise ConfigError(f"model '{config.model.name}' reads an image and a text, but data set "
                      f"'{config.data.name}' is one modality (data.kind={config.data.kind}); use "
                      "a paired data set (digit_scenes, digit_captions), data.kind=paired"
                      if multimodal else f"data.kind=paired gives an image and a text; model "
                      f"'{config.model.name}' reads one input (use {', '.join(MULTIMODAL_MODELS)})")
  for what, bad in {"grad_accum_steps > 1": config.grad_accum_steps > 1,
                    "parallel.strategy=pmap": config.parallel.strategy == "pmap"}.items():
    if bad and objective_name(config) == "contrastive":  # the batch is the set of negatives
      raise ConfigError(f"the contrastive loss contrasts each pair with the whole batch: {what} "
                        "would shrink it to a part (use 1 micro-batch, jit)")


def _check_objective(config: ml_collections.ConfigDict) -> None:
  """The objective fits the data kind and the model, has its networks' optimizers and labels."""
  name = objective_name(config)
  if name not in OBJECTIVES:
    raise ConfigError(f"unknown objective '{name}'; known: {', '.join(OBJECTIVES)}")
  entry = OBJECTIVES[name]
  kinds, others, model = entry.data_kinds, entry.networks[1:], entry.model
  if config.data.kind not in kinds:
    raise ConfigError(f"objective '{name}' trains on data.kind {' or '.join(kinds)}, not "
                      f"'{config.data.kind}'")
  trained_by = {e.model: n for n, e in OBJECTIVES.items() if e.model}
  if model and config.model.name != model:
    raise ConfigError(f"objective '{name}' trains model '{model}', not '{config.model.name}'")
  if not model and config.model.name in trained_by:
    raise ConfigError(f"model '{config.model.name}' is trained by objective "
                      f"'{trained_by[config.model.name]}', not '{name}' (set objective.name)")
  if config.tasks and name != "classification":
    raise ConfigError(f"multi-task training (tasks) takes the classification objective, not '{name}'")
  for net in others:
    if net not in config.optimizers:
      raise ConfigError(f"objective '{name}' trains a {net} with an optimizer of its own: set "
                        f"optimizers.{net} (config.optimizer_config(...)) in the config file")
  extra = sorted(set(config.optimizers) - set(others))
  if extra:
    raise ConfigError(f"optimizers.{extra[0]}: objective '{name}' has no network '{extra[0]}'"
                      + (f" (its other networks: {', '.join(others)})" if others else
                         " (it trains one network, with config.optimizer)"))
  for net in others:  # each one's numbers, by the rules of config.optimizer and config.schedule
    flat = flatten(config.optimizers[net].to_dict())
    for key, value in flat.items():
      rule = NUMERIC_RULES.get(key if key.startswith("schedule.") else f"optimizer.{key}")
      if rule and not rule[0](value):
        raise ConfigError(f"optimizers.{net}.{key} must be {rule[1]}, got {value!r}")
  if config.model.get("conditional") and not config.data.label_key:
    raise ConfigError(f"model.conditional=True needs labels, but data set '{config.data.name}' is "
                      "read without them (data.label_key is empty)")
  if name == "classification" and not config.data.label_key and not config.tasks:
    raise ConfigError("the classification objective needs labels: data.label_key is empty")


def to_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON types (tuples become lists), as written to config.json."""
  return json.loads(json.dumps(config.to_dict()))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """Flat names of keys whose values differ, ignoring RESUME_SAFE_KEYS. A key the old config
lacks counts as its default (a workdir from before the key existed resumes)."""
  a, b = flatten(old), flatten(new)
  a = {**{k: v for k, v in flatten(to_dict(default_config())).items() if k not in a}, **a}
  keys = sorted(set(a) | set(b))
  return [k for k in keys if k not in RESUME_SAFE_KEYS and a.get(k, "<absent>") != b.get(k, "<absent>")]


# --- Config files ---------------------------------------------------------------------------------


def load_config_module(path: str) -> Any:
  """Imports the config file at `path`; ConfigError if it is missing or does not import."""
  if not os.path.isfile(path):
    raise ConfigError(f"config file not found: {path}")
  try:
    module_spec = importlib.util.spec_from_file_location("_bigmodel_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  except Exception as e:  # the file's own error, whatever it is
    raise ConfigError(f"config file {path} does not import: {type(e).__name__}: {e}") from e
  return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path.py[:arg]` the way config_flags does; ConfigError if it cannot."""
  path, _, arg = spec.partition(":")
  module = load_config_module(path)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path} defines no get_config(arg)")
  try:
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:
    raise ConfigError(f"{path}: get_config({arg!r}) failed: {type(e).__name__}: {e}") from e


def nearest_keys(key: str, valid: list[str], n: int = 3) -> list[str]:
  """Likely meant keys: acronyms among siblings (lr -> learning_rate), then close spellings."""
  parent, _, leaf = key.rpartition(".")
  siblings = [v for v in valid if v.rpartition(".")[0] == parent]
  acronyms = [v for v in siblings
              if "".join(w[0] for w in v.rpartition(".")[2].split("_") if w) == leaf]
  close = (difflib.get_close_matches(key, siblings, n, 0.6) +
           difflib.get_close_matches(key, valid, n, 0.6))
  return list(dict.fromkeys(acronyms + close))[:n]
