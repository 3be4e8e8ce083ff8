"""Model registry: config.model.name -> a flax module class.

The module is built with its output size from the data set (`num_classes` for classifiers,
`vocab_size` for language models) plus every other key of config.model.
Each model's __call__ takes (inputs, *, train: bool) and returns logits (generative models: an
output that touches every parameter, for initialization; their objectives call their methods). With config.tasks,
`build_for` wraps the configured model as the shared trunk of a MultiTask (multitask.py).
"""

import contextlib
import dataclasses
import math

from typing import Any

import flax.linen as nn
import jax
import ml_collections

from bigmodel_jax import faults
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models.classifiers import CLASSIFIERS
from bigmodel_jax.models.gan import GAN
from bigmodel_jax.models.layout import Layout, layout_of
from bigmodel_jax.models.multimodal import Captioner, DualEncoder, FusionClassifier
from bigmodel_jax.models.multitask import MultiTask
from bigmodel_jax.models.recurrent import RNNLM, RNNSeq2Seq
from bigmodel_jax.models.transformer import DecoderLM, EncoderDecoder
from bigmodel_jax.models.transformer_config import TransformerOptions, config_of
from bigmodel_jax.models.unet import UNet
from bigmodel_jax.models.vae import VAE

MODELS: dict[str, type[nn.Module]] = {
    **CLASSIFIERS,  # mlp, cnn, resnet, mobilenet, densenet, rnn, transformer, vit
    "decoder_lm": DecoderLM,
    "rnn_lm": RNNLM,
    "encoder_decoder": EncoderDecoder,
    "rnn_seq2seq": RNNSeq2Seq,
    # generative (objectives vae, gan, diffusion); num_classes: the classes to condition on
    "vae": VAE,
    "gan": GAN,
    "unet": UNet,
    # an image and a text (data.kind=paired); num_classes and vocab_size from the data set
    "fusion": FusionClassifier,  # objective classification
    "dual_encoder": DualEncoder,  # objective contrastive
    "captioner": Captioner,  # objective captioning
}

OUTPUT_FIELDS = ("num_classes", "vocab_size")


def build(model_config: ml_collections.ConfigDict, num_outputs: int,
          layout: Layout = Layout()) -> nn.Module:
  """layout: what the mesh decides for the model (the trainer's; models/layout.py)."""
  name = model_config.name
  if name not in MODELS:
    raise ConfigError(f"unknown model '{name}'; known: {', '.join(sorted(MODELS))}")
  cls = MODELS[name]
  options = {k: (v.to_dict() if isinstance(v, ml_collections.ConfigDict) else v)
             for k, v in model_config.items() if k != "name"}
  fields = {f.name for f in dataclasses.fields(cls)
            if f.init and f.name not in ("parent", "name", "layout")}
  if isinstance(num_outputs, dict):  # paired data: classes and the tokenizer's vocabulary size
    outputs = {k: v for k, v in num_outputs.items() if k in fields}
    for key, value in outputs.items():
      if key in options and options.pop(key) not in (0, value):  # 0: the data set's
        raise ConfigError(f"model.{key}={model_config[key]}: the model must match the data set's "
                          f"{'tokenizer' if key == 'vocab_size' else 'labels'} ({value}; a text "
                          f"tower wider than its tokenizer reads ids it never gets, a narrower "
                          f"one cannot read them); set model.{key}=0 (the data set's)")
  else:
    outputs = {next(f for f in OUTPUT_FIELDS if f in fields): num_outputs}
  unknown = sorted(set(options) - fields)
  if unknown:
    raise ConfigError(f"model '{name}' has no option {', '.join(unknown)}; options: "
                      f"{', '.join(sorted(fields - set(outputs)))}")
  for key, value in options.items():
    _check_option(f"model.{key}", value)
  model = cls(**outputs, **options, **layout_of(cls, layout))
  if isinstance(model, TransformerOptions):
    config_of(model).check_width(model.dim)  # latent attention, MTP, experts (MoESpec.check)
  return model


_MAY_BE_ZERO = ("depth", "num_kv_heads", "num_experts", "shared_experts", "expert_dim",
                "first_dense", "lora_rank", "head_dim", "mtp_depth")


def _check_option(key: str, value: Any) -> None:
  """Numbers in a model's options: sizes and counts are positive integers (a depth may be 0),
  rates finite, dropout in [0, 1); a depth, num_kv_heads (0: as many as the heads) and the MoE
  counts (MoESpec.check) may be 0. The model's own checks (and init) catch the rest."""
  if isinstance(value, (tuple, list)):
    for v in value:
      _check_option(key, v)
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return
  if isinstance(value, float) and not math.isfinite(value):
    raise ConfigError(f"{key} must be a finite number, got {value}")
  if key.endswith("dropout") and not 0 <= value < 1:
    raise ConfigError(f"{key} must be in [0, 1), got {value}")
  if isinstance(value, int) and value < (0 if key.endswith(_MAY_BE_ZERO) else 1):
    raise ConfigError(f"{key} must be a positive integer, got {value}")


def build_for(config: ml_collections.ConfigDict, num_outputs: int | tuple[int, ...],
              layout: Layout = Layout()) -> nn.Module:
  """The experiment's model: config.model alone, or with config.tasks (num_outputs then one
  class count per task, in sorted task order) the trunk of a MultiTask with a head per task."""
  if not config.tasks:
    return build(config.model, num_outputs, layout)
  if config.model.name not in CLASSIFIERS:
    raise ConfigError(f"multi-task training needs a classifier trunk, not model "
                      f"'{config.model.name}'")
  if config.task_features <= 0:
    raise ConfigError(f"task_features must be positive, got {config.task_features}")
  return MultiTask(trunk=build(config.model, config.task_features, layout),
                   tasks=tuple(sorted(config.tasks)),
                   num_classes=tuple(num_outputs))


@contextlib.contextmanager
def init_errors_as_config_errors(name: str, example: Any):
  """A model whose options do not fit the data fails at init: report it as a ConfigError."""
  try:
    yield
  except ConfigError:
    raise
  except Exception as e:  # noqa: BLE001 (options that do not fit fail in jax, flax or the model)
    shapes = jax.tree.map(lambda x: tuple(x.shape[1:]), example)
    kind = "" if isinstance(e, (ValueError, TypeError)) else f"{type(e).__name__}: "
    raise ConfigError(f"model '{name}' cannot be built for inputs of shape {shapes}: "
                      f"{kind}{faults.first_line(e)}") from e
