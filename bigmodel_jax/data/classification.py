"""data.kind=classification: a TFDS data set's records (records.py), an input and a class
label, decoded and preprocessed per batch (images.py), or once into memory (data.cache)."""

from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data import records, tfds_source
from bigmodel_jax.data.source import Sources
from bigmodel_jax.faults import ConfigError

KEYS = ("scale", "mean", "std", "image_size", "eval_crop", "augment", "cache", "on_device",
        "path")


def _builder(cfg: ml_collections.ConfigDict) -> tuple[Any, int]:
  """The builder, its features checked, and the number of classes."""
  b = tfds_source.builder(cfg)
  tfds_source.check_features(cfg, b, (cfg.input_key, cfg.label_key) if cfg.label_key
                             else (cfg.input_key,))
  features = b.info.features
  num_classes = getattr(features[cfg.label_key], "num_classes", None) if cfg.label_key else 1
  if not num_classes:
    raise ConfigError(f"data set '{cfg.name}': feature '{cfg.label_key}' is not a class label")
  channels = (getattr(features[cfg.input_key], "shape", None) or (None,))[-1]
  for key in ("mean", "std"):
    if channels is not None and len(cfg[key]) not in (0, 1, channels):
      raise ConfigError(f"data.{key} has {len(cfg[key])} values; inputs of data set "
                        f"'{cfg.name}' have {channels} channels (give one value or {channels})")
  return b, num_classes


def input_spec(cfg: ml_collections.ConfigDict) -> tuple[Any, int]:
  b, num_classes = _builder(cfg)
  shape = tuple(b.info.features[cfg.input_key].shape)
  if cfg.image_size > 0:
    shape = (cfg.image_size, cfg.image_size, *shape[2:])
  if None in shape:
    raise ConfigError(f"data set '{cfg.name}': inputs of shape {shape} vary in size; "
                      f"set data.image_size")
  return jax.ShapeDtypeStruct((1, *shape), np.float32), num_classes


def decoders(cfg: ml_collections.ConfigDict, b: Any) -> dict[str, Any]:
  """Images to crop (data.image_size) are read encoded, and decoded at the size the crop needs
  (images.decode_crop); everything else as TFDS decodes it."""
  feature = b.info.features[cfg.input_key] if cfg.input_key in b.info.features else None
  if (cfg.image_size > 0  # RGB: what decode_crop gives
      and isinstance(feature, tfds.features.Image) and feature.shape[-1] == 3):
    return {"decoders": {cfg.input_key: tfds.decode.SkipDecoding()}}
  return {}


def load(cfg: ml_collections.ConfigDict) -> Sources:
  b, num_classes = _builder(cfg)
  train, eval_ = tfds_source.open_splits(cfg, b, decoders(cfg, b))
  return Sources(train=examples(train, cfg), eval=examples(eval_, cfg), num_outputs=num_classes)


def examples(source: Any, cfg: ml_collections.ConfigDict) -> Any:
  out = records.Records(source, cfg)
  out.decodes_files = isinstance(source[0][cfg.input_key], bytes)  # encoded images
  return records.InMemory(out) if cfg.cache else out
