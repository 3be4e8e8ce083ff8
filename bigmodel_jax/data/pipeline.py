"""Input pipeline: TFDS data sources read with Grain.

Training: a checkpointable Grain iterator over this process's shard, reshuffled every epoch from
the seed, batched (per-process share of the global batch), repeated forever. Evaluation: one
ordered pass over this process's share of the split, the last batch padded with mask 0.
Every example becomes {"inputs": float32, "label": int32}.
"""

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.config import ConfigError
from bigmodel_jax.data import digits, mnist1d  # noqa: F401  (registers the offline builders)

tfds.disable_progress_bar()  # builders announce their preparation themselves


@dataclasses.dataclass(frozen=True)
class Sources:
  train: Any  # random-access data sources (tfds ArrayRecordDataSource)
  eval: Any
  num_classes: int


def load(cfg: ml_collections.ConfigDict) -> Sources:
  """The train and eval sources of config.data; prepares an offline data set on first use."""
  kwargs = {"data_dir": cfg.data_dir or None, "builder_kwargs": {"file_format": "array_record"}}
  try:
    builder = tfds.builder(cfg.name, data_dir=cfg.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(f"unknown data set '{cfg.name}': {str(e).splitlines()[0]}") from e
  features = builder.info.features
  for key in (cfg.input_key, cfg.label_key):
    if key not in features:
      raise ConfigError(f"data set '{cfg.name}' has no feature '{key}'; features: "
                        f"{', '.join(features)} (set data.input_key / data.label_key)")
  num_classes = getattr(features[cfg.label_key], "num_classes", None)
  if not num_classes:
    raise ConfigError(f"data set '{cfg.name}': feature '{cfg.label_key}' is not a class label")
  try:
    train = tfds.data_source(cfg.name, split=cfg.train_split, **kwargs)
    eval_ = tfds.data_source(cfg.name, split=cfg.eval_split, **kwargs)
  except Exception as e:  # missing files, no download possible, unknown split, ...
    raise ConfigError(f"data set '{cfg.name}' could not be loaded: "
                      f"{type(e).__name__}: {str(e).strip().splitlines()[0]}") from e
  return Sources(train=train, eval=eval_, num_classes=num_classes)


class Preprocess(grain.transforms.Map):
  """A TFDS example -> {"inputs": float32 * scale, "label": int32}."""

  def __init__(self, cfg: ml_collections.ConfigDict):
    self.input_key, self.label_key, self.scale = cfg.input_key, cfg.label_key, cfg.scale

  def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    inputs = np.asarray(example[self.input_key], np.float32)
    if self.scale != 1.0:
      inputs = inputs * np.float32(self.scale)
    return {"inputs": inputs, "label": np.asarray(example[self.label_key], np.int32)}


class Gather(grain.transforms.Map):
  """A batch of record indices -> the preprocessed, stacked batch.

  With `arrays` (the whole split, preprocessed, in memory) this is one fancy-indexing per key;
  otherwise records are read from the TFDS source and preprocessed one by one.
  """

  def __init__(self, source: Any, cfg: ml_collections.ConfigDict,
               arrays: dict[str, np.ndarray] | None = None):
    self.source, self.preprocess, self.arrays = source, Preprocess(cfg), arrays

  def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    if self.arrays is not None:
      return {k: v[indices] for k, v in self.arrays.items()}
    # Plain indexing: every data source has it (tfds.testing.mock_data's __getitems__ is broken).
    examples = [self.preprocess.map(self.source[i]) for i in indices.tolist()]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def load_arrays(source: Any, cfg: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """The whole split, preprocessed and stacked (for data.cache=True)."""
  return Gather(source, cfg).map(np.arange(len(source)))


def train_iterator(source: Any, cfg: ml_collections.ConfigDict, global_batch: int,
                   seed: int) -> grain.DatasetIterator:
  """Endless shuffled batches of this process's shard; `get_state`/`set_state` checkpoint it.

  Grain shuffles, repeats and batches record indices (a new permutation every epoch, derived
  from the seed); `Gather` turns each index batch into data. Process p of P takes every P-th
  record; each epoch drops the remainder so that all processes see equally many.
  """
  count = jax.process_count()
  local_batch = global_batch // count
  usable = len(source) - len(source) % count
  if usable // count < local_batch:
    raise ConfigError(f"batch_size={global_batch} is larger than the training split "
                      f"({len(source)} examples)")
  arrays = load_arrays(source, cfg) if cfg.cache else None
  dataset = (grain.MapDataset.range(usable)[jax.process_index()::count]
             .seed(seed).shuffle().repeat(None)  # per-epoch reshuffle: the epoch seeds it
             .batch(local_batch, drop_remainder=True)
             .map(Gather(source, cfg, arrays)))
  threads = 0 if cfg.cache else 4
  return iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                                        prefetch_buffer_size=max(threads, 1) * 4)))


def eval_batches(source: Any, cfg: ml_collections.ConfigDict, global_batch: int
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One ordered pass over this process's contiguous share, with "mask" (1 real, 0 padding).

  Every process yields the same number of equally shaped batches, as the jitted step needs.
  """
  count, index = jax.process_count(), jax.process_index()
  per_process = math.ceil(len(source) / count)
  local_batch = global_batch // count
  start, stop = index * per_process, min(len(source), (index + 1) * per_process)
  preprocess = Preprocess(cfg)
  template = preprocess.map(source[0])  # shapes and dtypes of the padding
  dataset = grain.MapDataset.source(source)[start:stop].map(preprocess)
  for b in range(math.ceil(per_process / local_batch)):
    examples = [dataset[i] for i in range(b * local_batch, min(stop - start, (b + 1) * local_batch))]
    yield _pad_batch(examples, local_batch, template)


def _pad_batch(examples: list[dict[str, np.ndarray]], size: int,
               template: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  batch = {}
  for key, value in template.items():
    out = np.zeros((size, *np.shape(value)), np.asarray(value).dtype)
    for i, example in enumerate(examples):
      out[i] = example[key]
    batch[key] = out
  batch["mask"] = (np.arange(size) < len(examples)).astype(np.float32)
  return batch
