"""The Transformer family's options, declared once: TransformerConfig (its own fields, the
experts' from moe.MoESpec, the rotary positions' from rotary.Rope), config.model keys of the
same names. DecoderLM, TransformerClassifier and EncoderDecoder inherit TransformerOptions,
these fields as a flax module's; config_of(model) freezes them, and the frozen config goes
whole to every Block and Attention (transformer.py), which read what they use. Adding an option
is a field here and its use there."""

import dataclasses
from typing import Any

import flax.linen as nn

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
