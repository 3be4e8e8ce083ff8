"""Paired image + text examples (data.kind="paired"), read from a TFDS data set with an image,
a text of word ids (data/words.py; the vocabulary in the data set's metadata) and a label.
The offline ones are data/paired_digits.py's."""

from typing import Any

import jax
import ml_collections
import numpy as np

from bigmodel_jax.data import records, tfds_source
from bigmodel_jax.data.source import Sources
from bigmodel_jax.data.words import Words
from bigmodel_jax.faults import ConfigError

KEYS = ("text_key", "scale", "mean", "std", "augment", "cache", "on_device")

Batch = dict[str, np.ndarray]
Rngs = records.Rngs


def outputs(cfg: ml_collections.ConfigDict, builder: Any) -> dict[str, Any]:
  """What a paired data set tells its model and objective: the classes, the tokenizer's
  vocabulary size and, when its metadata names the classes and prompt templates ("a photo of
  a {}"), each class's prompts (for zero-shot classification: classes x templates x T ids)."""
  features, metadata = builder.info.features, builder.info.metadata
  problems = [f"no feature '{k}'" for k in (cfg.input_key, cfg.text_key, cfg.label_key)
              if k not in features]
  vocabulary = metadata.get("vocabulary") if metadata else None
  if not problems and not vocabulary:
    problems.append("no tokenizer vocabulary in its metadata")
  if problems:
    raise ConfigError(f"data.kind=paired reads an image, a text and a label; data set "
                      f"'{cfg.name}' has {' and '.join(problems)} (features: "
                      f"{', '.join(features)}; set data.input_key / text_key / label_key)")
  outputs = {"num_classes": features[cfg.label_key].num_classes,
             "vocab_size": len(vocabulary)}
  names, templates = metadata.get("class_names"), metadata.get("prompt_templates")
  if names and templates:
    words, length = Words(vocabulary), features[cfg.text_key].shape[-1]
    outputs["prompts"] = tuple(tuple(tuple(words.encode(t.format(n), length).tolist())
                                     for t in templates) for n in names)
  return outputs


def input_spec(cfg: ml_collections.ConfigDict) -> tuple[Any, dict[str, Any]]:
  b = tfds_source.builder(cfg)
  num_outputs = outputs(cfg, b)
  shape = tuple(b.info.features[cfg.input_key].shape)
  text = b.info.features[cfg.text_key].shape[-1]
  return {"image": jax.ShapeDtypeStruct((1, *shape), np.float32),
          "text": jax.ShapeDtypeStruct((1, text), np.int32)}, num_outputs


def load(cfg: ml_collections.ConfigDict) -> Sources:
  b = tfds_source.builder(cfg)
  num_outputs = outputs(cfg, b)
  splits = tfds_source.open_splits(cfg, b)
  train, eval_ = (Paired(s, cfg, captions=np.ndim(s[0][cfg.text_key]) == 2) for s in splits)
  if cfg.cache:
    train, eval_ = records.InMemory(train), records.InMemory(eval_)
  return Sources(train=train, eval=eval_, num_outputs=num_outputs)


class Paired(records.Records):
  """An image and a text (word ids, data/words.py) with a class label. A text feature of several
  captions (K x T) gives one caption per example: a random one in training (each example's RNG),
  caption i mod K of example i at evaluation, with all K as "references"."""

  def __init__(self, source: Any, cfg: ml_collections.ConfigDict, captions: bool):
    super().__init__(source, cfg)
    self.text_key, self.captions = cfg.text_key, captions
    self.random = self.random or captions

  def decode(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    records = [self.source[i] for i in indices.tolist()]  # each read once
    batch = self.decode_records(records, rngs)
    texts = np.stack([np.asarray(r[self.text_key], np.int32) for r in records])
    return {"inputs": {"image": batch["inputs"], "text": texts}, "label": batch["label"],
            "index": indices.astype(np.int64)}

  def finish_uint8(self, batch: Batch, rngs: Rngs = None) -> Batch:
    return self.finish(batch, rngs)  # the image normalized here (a dict of inputs)

  def finish(self, batch: Batch, rngs: Rngs = None) -> Batch:
    inputs = dict(batch["inputs"], image=self.preprocess.batch(batch["inputs"]["image"], rngs))
    out = {"inputs": inputs, "label": batch["label"]}
    if self.captions:  # B x K x T -> one caption each
      all_BxKxT = inputs["text"]
      k = all_BxKxT.shape[1]
      pick = (np.asarray([rng.integers(k) for rng in rngs]) if rngs is not None
              else batch["index"] % k)
      inputs["text"] = all_BxKxT[np.arange(len(pick)), pick]
      if rngs is None:
        out["references"] = all_BxKxT
    return out
