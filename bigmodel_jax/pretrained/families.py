"""Each family's tensor names and layouts in its home ecosystem, and the way to ours and back.

Our variables are named by path ("params/block0/attention/query/kernel", "batch_stats/stem_bn/
mean"). A family's NAMES table turns a path into the other ecosystem's tensor name by regular
expressions over the module path; the leaf (kernel, bias, scale, embedding, mean, var) picks the
tensor within the module. The layout follows from what our array is:

  same     the same shape (norm scales, embeddings, positions)
  flat     a bias whose head axes are flattened (ours N x H, theirs N*H)
  linear   torch.nn.Linear (out, in); ours (*in, *out) with `split` input axes
  conv1d   GPT-2's Conv1D (in, out)
  conv     torch's (out, in, *window); ours (*window, in, out)
  experts  a mixture of experts' stacked kernels: ours E x in x out, theirs one torch Linear
           (out, in) per expert, stacked E x out x in by stacked_experts (Mixtral's
           block_sparse_moe.experts.M.w1 -> block_sparse_moe.experts.w1)

A `part` (axis, index, count) says ours is one slice of a packed tensor (GPT-2's c_attn and
torchvision ViT's in_proj hold query, key and value together).
"""

import dataclasses
import math
import re
from typing import Any

import numpy as np

from bigmodel_jax.faults import ConfigError


@dataclasses.dataclass(frozen=True)
class Tensor:
  name: str
  kind: str  # same | flat | linear | conv1d | conv | experts
  split: int = 1  # linear / conv1d: how many of our leading axes are the input
  part: tuple[int, int, int] | None = None  # (axis, index, count) of a packed tensor


_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight",
           "mean": "running_mean", "var": "running_var"}

# (regex over our module path, their module name): the first that matches wins.
_RESNET = [
    (r"stem_conv", "conv1"), (r"stem_bn", "bn1"), (r"head", "fc"),
    (r"stage(\d+)_block(\d+)/proj_conv", lambda m: f"layer{m[1]}.{int(m[2]) - 1}.downsample.0"),
    (r"stage(\d+)_block(\d+)/proj_bn", lambda m: f"layer{m[1]}.{int(m[2]) - 1}.downsample.1"),
    (r"stage(\d+)_block(\d+)/(\w+)", lambda m: f"layer{m[1]}.{int(m[2]) - 1}.{m[3]}"),
]
_DENSENET = [
    (r"stem_conv", "features.conv0"), (r"stem_bn", "features.norm0"),
    (r"final_bn", "features.norm5"), (r"head", "classifier"),
    (r"block(\d+)_layer(\d+)_bn(\d)", r"features.denseblock\1.denselayer\2.norm\3"),
    (r"block(\d+)_layer(\d+)_conv(\d)", r"features.denseblock\1.denselayer\2.conv\3"),
    (r"transition(\d+)_bn", r"features.transition\1.norm"),
    (r"transition(\d+)_conv", r"features.transition\1.conv"),
]
_VIT = [
    (r"cls_token", "class_token"), (r"position_embedding", "encoder.pos_embedding"),
    (r"patch_embed", "conv_proj"), (r"ln_final", "encoder.ln"), (r"head", "heads.head"),
    (r"block(\d+)/ln_attention", r"encoder.layers.encoder_layer_\1.ln_1"),
    (r"block(\d+)/ln_mlp", r"encoder.layers.encoder_layer_\1.ln_2"),
    (r"block(\d+)/attention/(query|key|value)", r"encoder.layers.encoder_layer_\1.self_attention.in_proj"),
    (r"block(\d+)/attention/out", r"encoder.layers.encoder_layer_\1.self_attention.out_proj"),
    (r"block(\d+)/mlp_in", r"encoder.layers.encoder_layer_\1.mlp.0"),
    (r"block(\d+)/mlp_out", r"encoder.layers.encoder_layer_\1.mlp.3"),
]
_GPT2 = [
    (r"token_embedding", "transformer.wte"), (r"position_embedding", "transformer.wpe"),
    (r"ln_final", "transformer.ln_f"),
    (r"block(\d+)/ln_attention", r"transformer.h.\1.ln_1"),
    (r"block(\d+)/ln_mlp", r"transformer.h.\1.ln_2"),
    (r"block(\d+)/attention/(query|key|value)", r"transformer.h.\1.attn.c_attn"),
    (r"block(\d+)/attention/out", r"transformer.h.\1.attn.c_proj"),
    (r"block(\d+)/mlp_in", r"transformer.h.\1.mlp.c_fc"),
    (r"block(\d+)/mlp_out", r"transformer.h.\1.mlp.c_proj"),
]
_LLAMA = [
    (r"token_embedding", "model.embed_tokens"), (r"ln_final", "model.norm"),
    (r"lm_head", "lm_head"),
    (r"block(\d+)/ln_attention", r"model.layers.\1.input_layernorm"),
    (r"block(\d+)/ln_mlp", r"model.layers.\1.post_attention_layernorm"),
    (r"block(\d+)/attention/query", r"model.layers.\1.self_attn.q_proj"),
    (r"block(\d+)/attention/key", r"model.layers.\1.self_attn.k_proj"),
    (r"block(\d+)/attention/value", r"model.layers.\1.self_attn.v_proj"),
    (r"block(\d+)/attention/out", r"model.layers.\1.self_attn.o_proj"),
    (r"block(\d+)/mlp_gate", r"model.layers.\1.mlp.gate_proj"),
    (r"block(\d+)/mlp_in", r"model.layers.\1.mlp.up_proj"),
    (r"block(\d+)/mlp_out", r"model.layers.\1.mlp.down_proj"),
]

_MIXTRAL = [
    *_LLAMA,
    (r"block(\d+)/moe/router", r"model.layers.\1.block_sparse_moe.gate"),
    (r"block(\d+)/moe/w_gate", r"model.layers.\1.block_sparse_moe.experts.w1"),
    (r"block(\d+)/moe/w_out", r"model.layers.\1.block_sparse_moe.experts.w2"),
    (r"block(\d+)/moe/w_in", r"model.layers.\1.block_sparse_moe.experts.w3"),
]
_EXPERT_LEAVES = ("router", "w_in", "w_gate", "w_out")  # moe.py's parameters: not in a submodule

# family -> (names, the model.name it needs, where it comes from)
FAMILIES = {"torchvision_resnet": (_RESNET, "resnet", "torchvision"),
            "torchvision_densenet": (_DENSENET, "densenet", "torchvision"),
            "torchvision_vit": (_VIT, "vit", "torchvision"),
            "gpt2": (_GPT2, "decoder_lm", "hf"),
            "llama": (_LLAMA, "decoder_lm", "hf"),
            "mixtral": (_MIXTRAL, "decoder_lm", "hf")}
_QKV = {"query": 0, "key": 1, "value": 2}


def family_of(model_config: Any, hf_family: str | None) -> str:
  """The family a config's model is read as (hf_family: a Hugging Face directory's own)."""
  name = model_config.name
  if hf_family is not None:
    if name != "decoder_lm":
      raise ConfigError(f"a Hugging Face {hf_family} model converts into model.name=decoder_lm, "
                        f"not '{name}'")
    return hf_family
  if name == "decoder_lm" and model_config.get("num_experts"):
    return "mixtral"
  if name == "decoder_lm":
    return "llama" if model_config.get("norm") == "rmsnorm" else "gpt2"
  for family, (_, model, _) in FAMILIES.items():
    if model == name and family.startswith("torchvision"):
      return family
  raise ConfigError(f"model '{name}' has no checkpoint format to convert; supported: resnet "
                    f"(also ResNeXt, Wide-ResNet), densenet, vit (torchvision), decoder_lm "
                    f"(Hugging Face gpt2, llama, mixtral)")


def tensor_of(family: str, path: str, ndim: int) -> Tensor:
  """Their tensor for our variable at `path` ("params/..." or "batch_stats/...")."""
  collection, rest = path.split("/", 1)
  module, _, leaf = rest.rpartition("/")
  if not module:  # a parameter at the top (cls_token, position_embedding)
    module, leaf = leaf, "embedding"
  elif leaf in _EXPERT_LEAVES:  # a mixture of experts' own parameters: the leaf is the tensor
    module, leaf = f"{module}/{leaf}", "kernel"
  names = FAMILIES[family][0]
  for pattern, repl in names:
    m = re.fullmatch(pattern, module)
    if m:
      base = repl(m) if callable(repl) else m.expand(repl)
      break
  else:
    raise ConfigError(f"{family}: no tensor name for our parameter {path}")
  if collection == "batch_stats":
    return Tensor(f"{base}.{_LEAVES[leaf]}", "same")
  qkv = re.search(r"/(query|key|value)$", module)
  packed = qkv and family in ("gpt2", "torchvision_vit")
  if family == "torchvision_vit" and qkv:
    name = f"{base}_{'weight' if leaf == 'kernel' else 'bias'}"
  elif module in ("cls_token", "position_embedding") and family == "torchvision_vit":
    name = base
  else:
    name = f"{base}.{_LEAVES[leaf]}"
  part = None
  if packed:
    axis = -1 if family == "gpt2" else 0
    part = (axis if leaf == "kernel" else 0, _QKV[qkv[1]], 3)
  if leaf == "kernel":
    if re.search(r"/moe/w_(in|gate|out)$", module):
      return Tensor(name, "experts")
    if ndim >= 3 and ("conv" in module or module == "patch_embed"):
      return Tensor(name, "conv")
    split = 2 if module.endswith("/out") else 1
    return Tensor(name, "conv1d" if family == "gpt2" else "linear", split, part)
  if leaf == "bias" and ndim > 1:
    return Tensor(name, "flat", part=part)
  return Tensor(name, "same", part=part)


def their_shape(t: Tensor, ours: tuple[int, ...]) -> tuple[int, ...]:
  """The shape of their tensor (the whole packed tensor for a part) for our shape."""
  if t.kind == "same":
    shape = ours
  elif t.kind == "flat":
    shape = (math.prod(ours),)
  elif t.kind == "linear":
    shape = (math.prod(ours[t.split:]), math.prod(ours[:t.split]))
  elif t.kind == "conv1d":
    shape = (math.prod(ours[:t.split]), math.prod(ours[t.split:]))
  elif t.kind == "experts":
    shape = (ours[0], ours[2], ours[1])
  else:  # conv: (*window, in, out) -> (out, in, *window)
    shape = (ours[-1], ours[-2], *ours[:-2])
  if t.part:
    axis, _, count = t.part
    shape = list(shape)
    shape[axis] *= count
    shape = tuple(shape)
  return shape


def to_ours(t: Tensor, theirs: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
  if t.part:
    axis, index, count = t.part
    theirs = np.split(theirs, count, axis=axis)[index]
  if t.kind == "linear":
    theirs = theirs.T
  elif t.kind == "experts":
    theirs = theirs.swapaxes(1, 2)
  elif t.kind == "conv":
    theirs = np.moveaxis(theirs, (0, 1), (-1, -2))
  return np.ascontiguousarray(theirs.reshape(ours))


def to_theirs(t: Tensor, ours: np.ndarray) -> np.ndarray:
  """Our array as (its part of) their tensor."""
  if t.kind == "flat":
    return ours.reshape(-1)
  if t.kind == "linear":
    return ours.reshape(math.prod(ours.shape[:t.split]), -1).T
  if t.kind == "conv1d":
    return ours.reshape(math.prod(ours.shape[:t.split]), -1)
  if t.kind == "experts":
    return ours.swapaxes(1, 2)
  if t.kind == "conv":
    return np.moveaxis(ours, (-1, -2), (0, 1))
  return ours


# Their tensors that hold no parameter of ours: buffers, and an output layer tied to the
# embedding (checked equal on import, left out on export as transformers does).
IGNORED = re.compile(r".*num_batches_tracked$|.*\.attn\.(masked_)?bias$|.*rotary_emb\.inv_freq$")


_ONE_EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(\w+\.weight)")
_STACKED = re.compile(r"(.*\.experts)\.(w\d\.weight)")


def stacked_experts(tensors: dict[str, Any]) -> dict[str, Any]:
  """Their per-expert tensors (PREFIX.experts.M.NAME, M = 0..E-1) as one E x ... tensor each
  (PREFIX.experts.NAME); other tensors as they are."""
  out, groups = {}, {}
  for name, value in tensors.items():
    m = _ONE_EXPERT.fullmatch(name)
    if m:
      groups.setdefault(f"{m[1]}.{m[3]}", {})[int(m[2])] = value
    else:
      out[name] = value
  for name, experts in groups.items():
    if sorted(experts) != list(range(len(experts))):
      raise ConfigError(f"the checkpoint's experts of {name} are numbered {sorted(experts)}, "
                        f"not 0..{len(experts) - 1}")
    out[name] = np.stack([np.asarray(experts[i]) for i in range(len(experts))])
  return out


def unstacked_experts(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The inverse of stacked_experts: one tensor per expert, under their names."""
  out = {}
  for name, value in tensors.items():
    m = _STACKED.fullmatch(name)
    if m and value.ndim == 3:
      out.update({f"{m[1]}.{i}.{m[2]}": np.ascontiguousarray(v) for i, v in enumerate(value)})
    else:
      out[name] = value
  return out
