"""Classification records of a TFDS split and their in-memory cache: the examples objects that
pipeline.py builds for data.kind classification and that paired.py extends (an image and a
text). Examples objects: `len()`, `gather(indices, rngs) -> batch of arrays`, `random`."""

from typing import Any

import jax
import ml_collections
import numpy as np

from bigmodel_jax.data import images
from bigmodel_jax.faults import ConfigError

Batch = dict[str, np.ndarray]
Rngs = list[np.random.Generator] | None  # one per example when training (augmentation), else None


class Records:
  """TFDS records -> classification examples, read and preprocessed on demand (images.py).

  `decode` reads and crops examples into a stacked batch; `finish` augments and normalizes it.
  `gather_uint8` leaves uint8 images unnormalized: the trainer's batches, normalized in the step.
  """

  def __init__(self, source: Any, cfg: ml_collections.ConfigDict):
    self.source, self.input_key, self.label_key = source, cfg.input_key, cfg.label_key
    self.preprocess = images.Preprocess(cfg)
    self.random = bool(cfg.augment)  # training batches need per-example RNGs
    self.decodes_files = False  # images read encoded and decoded per batch (load sets it)

  def __len__(self) -> int:
    return len(self.source)

  def decode(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    # Plain indexing: every data source has it (tfds.testing.mock_data's __getitems__ is broken).
    return self.decode_records([self.source[i] for i in indices.tolist()], rngs)

  def decode_records(self, examples: list[Any], rngs: Rngs = None) -> Batch:
    rngs = rngs or [None] * len(examples)
    inputs = [self.preprocess.example(_image(e[self.input_key]), rng)
              for e, rng in zip(examples, rngs)]
    labels = ([e[self.label_key] for e in examples] if self.label_key  # "": unlabeled, 0
              else np.zeros(len(examples)))
    return {"inputs": np.stack(inputs), "label": np.asarray(labels, np.int32)}

  def finish(self, batch: Batch, rngs: Rngs = None) -> Batch:
    return {**batch, "inputs": self.preprocess.batch(batch["inputs"], rngs)}

  def gather(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    return self.finish(self.decode(indices, rngs), rngs)

  def finish_uint8(self, batch: Batch, rngs: Rngs = None) -> Batch:
    inputs = batch["inputs"]
    if inputs.dtype != np.uint8:  # float features: normalized here
      return self.finish(batch, rngs)
    return {**batch, "inputs": self.preprocess.augment_batch(inputs, rngs)}

  def gather_uint8(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    return self.finish_uint8(self.decode(indices, rngs), rngs)


def _image(value: Any) -> Any:
  return value if isinstance(value, bytes) else np.asarray(value)  # bytes: encoded (SkipDecoding)


class InMemory:
  """Examples decoded once into arrays; gathering is one fancy-indexing per key (then Records'
  augmentation and normalization, which stay per batch)."""

  in_memory = True  # gathering is cheap: no reader threads needed

  def __init__(self, examples: Any):
    self.examples = examples
    self.random = getattr(examples, "random", False)
    if isinstance(examples, Records):
      if examples.preprocess.random_per_example:
        raise ConfigError("data.cache cannot keep randomly cropped examples "
                          "(data.augment=inception_crop): turn one of them off")
      self.arrays = examples.decode(np.arange(len(examples)))
    else:
      self.arrays = examples.gather(np.arange(len(examples)))

  def __len__(self) -> int:
    return len(self.arrays["label"])

  def gather(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    batch = jax.tree.map(lambda v: v[indices], self.arrays)
    return self.examples.finish(batch, rngs) if isinstance(self.examples, Records) else batch

  def gather_uint8(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    batch = jax.tree.map(lambda v: v[indices], self.arrays)
    return self.examples.finish_uint8(batch, rngs) if isinstance(self.examples, Records) else batch
