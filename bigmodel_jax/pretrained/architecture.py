"""A checkpoint's architecture as our model options, and configs that take it.

What a checkpoint fixes is read from it: a Hugging Face config.json (hf_config.architecture) or
a torchvision state_dict's shapes (of_torchvision: depth, widths, groups, ...). A conversion
takes those options over its config's (the config gives the training settings), and so does a
run that warm-starts from a converted workdir (of_init_from, with its tokenizer); `adopt` returns
the config with them and the options that changed, which the console lists.
"""

import copy
import dataclasses
import math
import re
from typing import Any

import ml_collections
import numpy as np

from bigmodel_jax.data import tokenizer
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models import MODELS
from bigmodel_jax.models.densenet import VARIANTS as DENSENETS
from bigmodel_jax.models.resnet import STAGES
from bigmodel_jax.runs import load

Tensors = dict[str, Any]
# what a torchvision family computes whatever its shapes (an export checks it too)
TORCHVISION_FIXED = {"torchvision_vit": {"mlp": "gelu_exact", "pooling": "cls",
                                         "norm_epsilon": 1e-6}}


def options(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The model's options, its class's defaults filled in for the keys the config leaves out."""
  fields = {f.name: f.default for f in dataclasses.fields(MODELS[model.name])
            if f.default is not dataclasses.MISSING}
  return ml_collections.ConfigDict({**fields, **model.to_dict()})


def _same(ours: Any, theirs: Any) -> bool:
  if isinstance(theirs, float) and isinstance(ours, (int, float)):
    return bool(np.isclose(ours, theirs, rtol=1e-12, atol=0))
  if isinstance(theirs, (tuple, list)):
    return isinstance(ours, (tuple, list)) and tuple(ours) == tuple(theirs)
  return ours == theirs


def differences(model: ml_collections.ConfigDict,
                wanted: dict[str, Any]) -> list[tuple[str, Any, Any]]:
  """(key, ours, theirs) for each option in `wanted` that the model has otherwise."""
  model = options(model)
  out = []
  for key, theirs in wanted.items():
    ours = model.get(key)
    if key == "num_kv_heads":  # 0: as many as the query heads
      ours = ours or model.num_heads
    if not _same(ours, theirs):
      out.append((key, ours, theirs))
  return out


def adopt(config: ml_collections.ConfigDict, wanted: dict[str, Any]
          ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """The config with the model options `wanted` (a copy), and "model.KEY=THEIRS (was OURS)"
  for each that changed."""
  changed = [f"model.{key}={theirs!r} (was {ours!r})"
             for key, ours, theirs in differences(config.model, wanted)]
  config = copy.deepcopy(config)
  with config.unlocked():
    for key, value in wanted.items():
      if key in config.model and not _same(config.model[key], value):
        del config.model[key]  # a field may change type (a bottleneck's None -> True)
      if key not in config.model:
        config.model[key] = tuple(value) if isinstance(value, list) else value
  seq_len = config.data.get("seq_len", 0)
  if "max_len" in wanted and seq_len > wanted["max_len"]:  # learned positions end there
    changed.append(f"data.seq_len={wanted['max_len']} (was {seq_len}): the model's max_len")
    config.data.seq_len = wanted["max_len"]
  return config, changed


def _count(tensors: Tensors, pattern: str) -> int:
  """How many consecutive indices from 0 (or 1) the pattern's {} takes in tensor names."""
  found = {int(m[1]) for name in tensors if (m := re.fullmatch(pattern.format(r"(\d+)"), name))}
  n = 0
  while n + min(found, default=0) in found:
    n += 1
  return n


def of_torchvision(family: str, tensors: Tensors,
                   config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The options a torchvision state_dict's shapes fix (ConfigError naming what to set where the
  shapes cannot tell, or where the config's data does not fit them); {} for another family's
  tensors without their config.json (a bare safetensors file: the config describes it)."""
  shape = lambda name: tuple(np.shape(tensors[name])) if name in tensors else None
  if family == "torchvision_resnet":
    if shape("conv1.weight") is None:
      raise ConfigError("the checkpoint has no tensor conv1.weight: is it a torchvision ResNet?")
    stages = tuple(_count(tensors, rf"layer{s}\.{{}}\.conv1\.weight")
                   for s in range(1, _count(tensors, r"layer{}\.0\.conv1\.weight") + 1))
    bottleneck = shape("layer1.0.conv3.weight") is not None
    planes = tuple(shape(f"layer{s}.0.conv3.weight")[0] // 4 if bottleneck else
                   shape(f"layer{s}.0.conv1.weight")[0] for s in range(1, len(stages) + 1))
    width, per_group_in = shape("layer1.0.conv2.weight")[:2]
    groups = width // per_group_in
    depth = sum(stages) * (3 if bottleneck else 2) + 2
    standard = STAGES.get(depth) == stages and (depth >= 50) == bottleneck
    return {"depth": depth, "stage_sizes": () if standard else stages,
            "bottleneck": None if standard else bottleneck, "widths": planes,
            "groups": groups, "width_per_group": width // groups * 64 // planes[0],
            "stem": "imagenet" if shape("conv1.weight")[-1] == 7 else "cifar"}
  if family == "torchvision_densenet":
    layer = r"features\.denseblock{}\.denselayer{}\.conv1\.weight"
    blocks = tuple(_count(tensors, layer.format(b, "{}"))
                   for b in range(1, _count(tensors, layer.format("{}", 1)) + 1))
    growth = shape("features.denseblock1.denselayer1.conv2.weight")[0]
    depth = 2 * sum(blocks) + 5
    return {"depth": depth, "block_sizes": () if DENSENETS.get(depth) == blocks else blocks,
            "growth": growth,
            "bn_size": shape("features.denseblock1.denselayer1.conv1.weight")[0] // growth,
            "stem_features": shape("features.conv0.weight")[0],
            "stem": "imagenet" if shape("features.conv0.weight")[-1] == 7 else "cifar"}
  if family != "torchvision_vit":
    return {}
  # the heads cannot be read from shapes (the config's stand)
  dim, _, *patch = shape("conv_proj.weight")
  heads = options(config.model).get("num_heads", 0)
  if not heads or dim % heads:
    raise ConfigError(f"the checkpoint's ViT is {dim} wide, which the config's {heads} heads do "
                      f"not divide, and its shapes do not tell its heads: set "
                      f"--config.model.num_heads (ViT-B/16: 12)")
  tokens = shape("encoder.pos_embedding")[1] - 1
  side = math.isqrt(tokens) * patch[0]
  if config.data.get("image_size") != side:
    raise ConfigError(f"the checkpoint's ViT reads {side}x{side} images ({tokens} patches of "
                      f"{patch[0]}x{patch[1]}): set --config.data.image_size={side}")
  return {"patch": tuple(patch), "dim": dim,
          "depth": _count(tensors, r"encoder\.layers\.encoder_layer_{}\.ln_1\.weight"),
          "mlp_dim": shape("encoder.layers.encoder_layer_0.mlp.0.weight")[0],
          **TORCHVISION_FIXED[family]}


def of_init_from(config: ml_collections.ConfigDict
                 ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """The config of a run that warm-starts from a converted workdir (config.init_from, with
  config.init_architecture): with that checkpoint's architecture and, for a language model, its
  tokenizer; and what changed. Any other config as it is, and one that puts the parameters
  into a part of its model (init_into: LiT's image tower) or has a model of another kind."""
  if not (config.init_from and config.init_architecture) or config.init_into:
    return config, []
  report = load.converted_report(config.init_from)
  if not report or "architecture" not in report:  # a trained workdir, or converted before
    return config, []
  if load.read_config(config.init_from).model.name != config.model.name:
    return config, []
  config, taken = adopt(config, report["architecture"])
  kept = tokenizer.in_directory(config.init_from)
  if kept and config.data.kind == "lm" and config.data.tokenizer != kept:
    taken.append(f"data.tokenizer={kept!r} (was {config.data.tokenizer!r})")
    config.data.tokenizer = kept
  return config, taken
