"""Hugging Face config.json for GPT-2, Llama and Mixtral: read on import as our model options (the
converted model computes exactly what the checkpoint's does; an option ours cannot represent is
a ConfigError naming it), checked and written on export."""

from typing import Any

import ml_collections

from bigmodel_jax.faults import ConfigError
from bigmodel_jax.pretrained import architecture as architecture_lib

FAMILIES = ("gpt2", "llama", "mixtral")

_GPT2_ACT = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}


def family_of(hf: dict[str, Any]) -> str:
  """The family of a config.json: its model_type, else its architectures' class name."""
  kind = hf.get("model_type") or next(
      (f for a in hf.get("architectures") or () for f in FAMILIES if a.lower().startswith(f)), None)
  if kind not in FAMILIES:
    raise ConfigError(f"Hugging Face model_type '{kind}' is not supported; supported: "
                      f"{', '.join(FAMILIES)}")
  return kind


def architecture(family: str, hf: dict[str, Any]) -> dict[str, Any]:
  """Our model options (decoder_lm's) that a Hugging Face config.json implies."""
  try:
    return _architecture(family, hf)
  except KeyError as e:
    raise ConfigError(f"config.json of this {family} model has no {e.args[0]}") from e


def _architecture(family: str, hf: dict[str, Any]) -> dict[str, Any]:
  if family == "gpt2":
    for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
      if hf.get(key):
        raise ConfigError(f"GPT-2 {key}=true is not supported")
    if hf.get("scale_attn_weights") is False:
      raise ConfigError("GPT-2 scale_attn_weights=false is not supported")
    act = hf.get("activation_function", "gelu_new")
    if act not in _GPT2_ACT:
      raise ConfigError(f"GPT-2 activation_function '{act}' is not supported; supported: "
                        f"{', '.join(_GPT2_ACT)}")
    return {"dim": hf["n_embd"], "depth": hf["n_layer"], "num_heads": hf["n_head"],
            "mlp_dim": hf.get("n_inner") or 4 * hf["n_embd"], "max_len": hf["n_positions"],
            "norm_epsilon": hf.get("layer_norm_epsilon", 1e-5), "mlp": _GPT2_ACT[act],
            "norm": "layernorm", "positions": "learned", "use_bias": True,
            "tie_embeddings": hf.get("tie_word_embeddings", True)}
  for key, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
    if hf.get(key, ok) != ok:
      raise ConfigError(f"Llama {key}={hf[key]!r} is not supported (only {ok!r})")
  heads = hf["num_attention_heads"]
  if (hf.get("head_dim") or hf["hidden_size"] // heads) * heads != hf["hidden_size"]:
    raise ConfigError(f"Llama head_dim={hf['head_dim']} is not hidden_size / num_attention_heads")
  experts = {"num_experts": 0}
  if family == "mixtral":
    if hf.get("sliding_window"):
      raise ConfigError(f"Mixtral sliding_window={hf['sliding_window']} is not supported (only "
                        f"null: every key in view)")
    if hf.get("num_experts_per_tok", 2) < 2:  # transformers renormalizes one weight to 1.0
      raise ConfigError("Mixtral num_experts_per_tok=1 is not supported (transformers gives "
                        "the one expert weight 1.0; ours the router's probability)")
    experts = {"num_experts": hf["num_local_experts"],
               "experts_per_token": hf.get("num_experts_per_tok", 2), "moe_every": 1,
               "capacity_factor": 0.0, "router": "softmax", "shared_experts": 0,
               "expert_dim": 0}
  return {**experts, "dim": hf["hidden_size"], "depth": hf["num_hidden_layers"], "num_heads": heads,
          "num_kv_heads": hf.get("num_key_value_heads") or heads,
          "mlp_dim": hf["intermediate_size"], "norm_epsilon": hf.get("rms_norm_eps", 1e-6),
          **_rope(hf), "norm": "rmsnorm", "mlp": "swiglu", "positions": "rotary",
          "use_bias": False, "tie_embeddings": hf.get("tie_word_embeddings", False)}


# Hugging Face's rope_type -> our model.rope_scaling and the parameters it reads
_ROPE = {"default": ("none", {}), "linear": ("linear", {"factor": "rope_factor"}),
         "llama3": ("llama3", {"factor": "rope_factor", "low_freq_factor": "rope_low_freq_factor",
                               "high_freq_factor": "rope_high_freq_factor",
                               "original_max_position_embeddings": "rope_original_max_len"})}


def _rope(hf: dict[str, Any]) -> dict[str, Any]:
  """The rotary options of config.json: transformers >= 5 writes rope_parameters (theta and
  scaling together), earlier versions rope_theta and rope_scaling."""
  params = hf.get("rope_parameters") or {}
  scaling = params if params.get("rope_type", "default") != "default" else (
      hf.get("rope_scaling") or {})
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind not in _ROPE:
    raise ConfigError(f"rope_type '{kind}' is not supported; supported: {', '.join(_ROPE)}")
  if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
    raise ConfigError("partial_rotary_factor below 1 is not supported (every feature rotates)")
  ours, keys = _ROPE[kind]
  theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
  out = {"rope_base": float(theta), "rope_scaling": ours}
  for theirs, key in keys.items():
    value = scaling.get(theirs)
    if value is None and theirs == "original_max_position_embeddings":  # as transformers
      value = hf.get("max_position_embeddings")
    if value is None:
      raise ConfigError(f"config.json's {kind} rope scaling has no {theirs}")
    out[key] = (int if key == "rope_original_max_len" else float)(value)
  return out


def of(family: str, model: ml_collections.ConfigDict, variables: dict[str, Any]) -> dict[str, Any]:
  """config.json for our model, which transformers' Auto classes load."""
  model = architecture_lib.options(model)
  vocab = int(variables["params"]["token_embedding"]["embedding"].shape[0])
  if family == "gpt2":
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
            "n_positions": model.max_len, "n_embd": model.dim, "n_layer": model.depth,
            "n_head": model.num_heads, "n_inner": model.mlp_dim,
            "activation_function": {"gelu": "gelu_new", "gelu_exact": "gelu"}.get(model.mlp, model.mlp),
            "layer_norm_epsilon": model.norm_epsilon, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "attn_pdrop": 0.0, "tie_word_embeddings": model.tie_embeddings}
  experts, scaling = {}, _rope_scaling(model)
  if family == "mixtral":
    experts = {"num_local_experts": model.num_experts,
               "num_experts_per_tok": model.experts_per_token, "sliding_window": None,
               "router_aux_loss_coef": model.load_balance_weight}
  return {"model_type": family, "architectures": [f"{family.capitalize()}ForCausalLM"],
          **experts, "vocab_size": vocab,
          "hidden_size": model.dim, "intermediate_size": model.mlp_dim,
          "num_hidden_layers": model.depth, "num_attention_heads": model.num_heads,
          "num_key_value_heads": model.num_kv_heads or model.num_heads,
          "head_dim": model.dim // model.num_heads, "max_position_embeddings": model.max_len,
          "rms_norm_eps": model.norm_epsilon, "rope_theta": model.rope_base, "hidden_act": "silu",
          "rope_parameters": {"rope_theta": model.rope_base, **scaling},
          "rope_scaling": scaling if scaling["rope_type"] != "default" else None,  # before 5.0
          "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": model.tie_embeddings}


def _rope_scaling(model: ml_collections.ConfigDict) -> dict[str, Any]:
  kind, keys = next((k, keys) for k, (ours, keys) in _ROPE.items() if ours == model.rope_scaling)
  return {"rope_type": kind, **{theirs: model[ours] for theirs, ours in keys.items()}}
