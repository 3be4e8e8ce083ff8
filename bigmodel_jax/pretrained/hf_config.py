"""Hugging Face config.json for GPT-2, Llama and Mixtral: checked against our model config on import (so
the converted model computes exactly what the checkpoint's does), written on export."""

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models import MODELS

_GPT2_ACT = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}


def _expected(family: str, hf: dict[str, Any]) -> dict[str, Any]:
  """Our model options that a Hugging Face config.json implies."""
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
  for key, ok in (("rope_scaling", None), ("hidden_act", "silu"), ("attention_bias", False),
                  ("mlp_bias", False)):
    if hf.get(key, ok) != ok:
      raise ConfigError(f"Llama {key}={hf[key]!r} is not supported (only {ok!r})")
  rope = hf.get("rope_parameters") or {}  # transformers >= 5; before: rope_theta, rope_scaling
  if rope.get("rope_type", "default") != "default":
    raise ConfigError(f"Llama rope_type '{rope['rope_type']}' is not supported (only default)")
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
          "rope_base": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))), "norm": "rmsnorm",
          "mlp": "swiglu", "positions": "rotary", "use_bias": False,
          "tie_embeddings": hf.get("tie_word_embeddings", False)}


def options(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The model's options, its class's defaults filled in for the keys the config leaves out."""
  fields = {f.name: f.default for f in dataclasses.fields(MODELS[model.name])
            if f.default is not dataclasses.MISSING}
  return ml_collections.ConfigDict({**fields, **model.to_dict()})


def check(family: str, hf: dict[str, Any], model: ml_collections.ConfigDict,
          exporting: bool = False) -> None:
  """ConfigError naming the first model option that differs from what config.json says (on
  export: from what transformers' model of that family computes)."""
  model = options(model)
  try:
    expected = _expected(family, hf)
  except KeyError as e:
    raise ConfigError(f"config.json of this {family} model has no {e.args[0]}") from e
  for key, value in expected.items():
    ours = model.get(key)
    if key == "num_kv_heads":
      ours = ours or model.num_heads
    same = (np.isclose(ours, value, rtol=1e-12, atol=0) if isinstance(value, float)
            else ours == value)
    if not same and exporting:
      raise ConfigError(f"transformers' {family} computes model.{key}={value!r}; this model has "
                        f"{ours!r}, so it cannot be exported as {family}")
    if not same:
      raise ConfigError(f"the checkpoint's config.json needs model.{key}={value!r}, the config "
                        f"has {ours!r}: set --config.model.{key}={value}")


def of(family: str, model: ml_collections.ConfigDict, variables: dict[str, Any]) -> dict[str, Any]:
  """config.json for our model, which transformers' Auto classes load."""
  model = options(model)
  vocab = int(variables["params"]["token_embedding"]["embedding"].shape[0])
  if family == "gpt2":
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": vocab,
            "n_positions": model.max_len, "n_embd": model.dim, "n_layer": model.depth,
            "n_head": model.num_heads, "n_inner": model.mlp_dim,
            "activation_function": {"gelu": "gelu_new", "gelu_exact": "gelu"}.get(model.mlp, model.mlp),
            "layer_norm_epsilon": model.norm_epsilon, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "attn_pdrop": 0.0, "tie_word_embeddings": model.tie_embeddings}
  experts = {}
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
          "rope_parameters": {"rope_theta": model.rope_base, "rope_type": "default"},
          "attention_bias": False, "mlp_bias": False, "rope_scaling": None,
          "tie_word_embeddings": model.tie_embeddings}
