"""The Transformer family's options, declared once: TransformerConfig (its own fields, the
experts' from moe.MoESpec, the rotary positions' from rotary.Rope), config.model keys of the
same names. DecoderLM, TransformerClassifier and EncoderDecoder inherit TransformerOptions,
these fields as a flax module's; config_of(model) freezes them, and the frozen config goes
whole to every Block and Attention (transformer.py), which read what they use. Adding an option
is a field here and its use there."""

import dataclasses
from typing import Any

import flax.linen as nn

from bigmodel_jax.faults import ConfigError

from bigmodel_jax.models.moe import MoESpec
from bigmodel_jax.models.rotary import Rope


@dataclasses.dataclass(frozen=True)
class TransformerConfig(MoESpec, Rope):
  """The Transformer family's options (config.model keys of these names), each declared once:
  here, in MoESpec (the experts) or in Rope (rotary positions). The model sizes (dim, depth,
  mlp_dim, max_len) are the models' own."""

  num_heads: int = 4
  dropout: float = 0.0
  remat: str = "none"  # none, full, dots (REMAT_POLICIES)
  scan_layers: bool = False  # the blocks as one nn.scan over stacked parameters
  attention: str = "auto"  # ATTENTION_IMPLEMENTATIONS: auto (cuDNN flash attention on GPUs)
  norm: str = "layernorm"  # layernorm (GPT-2) | rmsnorm (Llama)
  norm_epsilon: float = 1e-6  # GPT-2: 1e-5; Llama: its config's rms_norm_eps
  mlp: str = "gelu"  # MLPS: gelu (GPT-2's tanh approximation) | gelu_exact (ViT) | swiglu (Llama)
  use_bias: bool = True  # Llama: False
  num_kv_heads: int = 0  # grouped-query attention: key/value heads shared by groups; 0 = num_heads
  qk_norm: bool = False  # RMSNorm of each head's queries and keys (OLMo 2, Gemma 3)
  # multi-head latent attention (DeepSeek-V2/V3) when kv_lora_rank > 0: keys and values from a
  # kv_lora_rank latent (the decode cache holds it and the rotary key), queries from a
  # q_lora_rank one (0: a full projection); each head's query and key are qk_nope_head_dim
  # features without positions and qk_rope_head_dim rotary ones, its value v_head_dim
  kv_lora_rank: int = 0
  q_lora_rank: int = 0
  qk_nope_head_dim: int = 0
  qk_rope_head_dim: int = 0
  v_head_dim: int = 0
  # multi-token prediction (DeepSeek-V3): mtp_depth modules after the last block, the k-th
  # predicting the token k+1 places further on from the previous one's output and the embedding
  # of the token k places on; their mean loss, times mtp_weight, joins the loss in training
  mtp_depth: int = 0
  mtp_weight: float = 0.3

  def check_width(self, dim: int) -> None:
    """ConfigError naming the first latent-attention or multi-token option that does not fit a
    model of width `dim` (the experts' options: MoESpec.check)."""
    self.check()
    if self.mtp_depth < 0:
      raise ConfigError(f"model.mtp_depth must be >= 0 (0: no multi-token prediction), got "
                        f"{self.mtp_depth}")
    if not self.kv_lora_rank:
      return
    for key in ("kv_lora_rank", "q_lora_rank"):
      value = getattr(self, key)
      if value and not 0 < value < dim:
        raise ConfigError(f"model.{key}={value} must be positive and smaller than the width "
                          f"{dim} (model.dim)")
    for key in ("qk_nope_head_dim", "v_head_dim"):
      if getattr(self, key) <= 0:
        raise ConfigError(f"model.{key} must be positive with latent attention "
                          f"(model.kv_lora_rank > 0), got {getattr(self, key)}")
    if self.qk_rope_head_dim <= 0 or self.qk_rope_head_dim % 2:
      raise ConfigError(f"model.qk_rope_head_dim={self.qk_rope_head_dim} must be a positive even "
                        f"number: rotary positions turn pairs of features")


def _options_module() -> type[nn.Module]:
  """A flax module base whose keyword-only fields are TransformerConfig's (with its defaults):
  what DecoderLM, TransformerClassifier and EncoderDecoder inherit, so config.model's keys are
  their constructor's arguments; config_of(model) freezes them back."""
  fields = dataclasses.fields(TransformerConfig)
  namespace: dict[str, Any] = {f.name: dataclasses.field(default=f.default, kw_only=True)
                               for f in fields}
  namespace["__annotations__"] = {f.name: f.type for f in fields}
  namespace["__doc__"] = "TransformerConfig's fields as a model's keyword-only fields."
  return type("TransformerOptions", (nn.Module,), namespace)


TransformerOptions = _options_module()


def config_of(model: nn.Module) -> TransformerConfig:
  """The frozen options of a model that inherits TransformerOptions."""
  return TransformerConfig(**{f.name: getattr(model, f.name)
                              for f in dataclasses.fields(TransformerConfig)})
