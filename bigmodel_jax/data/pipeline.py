"""Input pipeline: config.data's source (one module per data.kind: source.py's DataSource) and
the batches the trainer reads from its examples.

  classification  (classification.py) TFDS records, preprocessed one by one (images.py), or
                  decoded once into memory (data.cache; records.py)
  lm              (lm.py) token windows read from token stores, optionally packed with document
                  boundaries; one corpus or a weighted mixture (data.corpora)
  seq2seq         (seq2seq.py) question/answer texts as padded bytes
  paired          (paired.py) an image and a text of word ids, with a class label

Classification batches are {"inputs": float32, "label": int32}; language-model batches are
{"inputs": int32 B x L, "label": int32 B x L}, the label being the next token (packed: inputs
{"tokens", "segment_ids", "positions"} and "weights"; with a tokenizer "label_bytes"; a mixture's
rows "source"); seq2seq batches are {"inputs": {"encoder": B x S, "decoder": B x T}, "label":
B x T, "weights": B x T}; paired batches are {"inputs": {"image": float32, "text": int32 B x T},
"label": int32 B}, and an eval batch of a data set with several captions per image also has
"references" B x K x T (all of them).

Training: a Grain dataset of batch numbers, each mapped to a global batch of example indices at
once (a new permutation each epoch from the seed; every process walks the same global order and
gathers only its rows of each global batch); the iterator is checkpointable. Evaluation: one
ordered pass over this process's share, padded, with a mask. Several data sets trained together
(config.tasks): data/tasks.py.
"""

import math
from collections.abc import Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from bigmodel_jax.data import classification, iterator, lm, paired, records, seq2seq
from bigmodel_jax.data.iterator import Gather, GlobalBatch, trainer_batch  # noqa: F401
from bigmodel_jax.data.source import Sources  # noqa: F401
from bigmodel_jax.faults import ConfigError

KINDS = {"classification": classification, "lm": lm, "seq2seq": seq2seq, "paired": paired}


def source(cfg: ml_collections.ConfigDict) -> Any:
  """The DataSource module of data.kind."""
  if cfg.kind not in KINDS:
    raise ConfigError(f"unknown data.kind '{cfg.kind}'; known: {', '.join(KINDS)}")
  return KINDS[cfg.kind]


def input_spec(cfg: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """(inputs of one example as ShapeDtypeStructs with a batch axis of 1, number of outputs),
  from the data set's metadata alone: what --dry_run plans with, without the data."""
  return source(cfg).input_spec(cfg)


def load(cfg: ml_collections.ConfigDict) -> Sources:
  """The train and eval examples of config.data; prepares an offline data set on first use."""
  return source(cfg).load(cfg)


def train_iterator(examples: Any, global_batch: int, seed: int, workers: int = 0,
                   rows: slice | None = None) -> iterator.TrainIterator:
  """Endless shuffled batches; `get_state`/`set_state` checkpoint it (iterator.py).

  Every process walks the same global order (a permutation of the split per epoch, from the
  seed) and cuts the same global batches; process p reads only rows [p * b, (p + 1) * b) of
  each, b = global_batch / processes. So the data order does not depend on how many processes
  or devices run, nor on the worker processes (workers > 0: Grain's multiprocessing, -1 one
  per core where examples decode files), and a checkpoint resumes on any number of them.
  rows: which rows of each global batch to gather (default this process's).
  """
  count, index = jax.process_count(), jax.process_index()
  local_batch = global_batch // count
  if len(examples) < global_batch:
    raise ConfigError(f"batch_size={global_batch} is larger than the training split "
                      f"({len(examples)} examples)")
  sampler = getattr(examples, "sampler", None)  # a mixture of tasks draws its own batches
  batches = sampler(global_batch, seed) if sampler else GlobalBatch(len(examples), global_batch, seed)
  rows = slice(index * local_batch, (index + 1) * local_batch) if rows is None else rows
  gather = Gather(examples, seed, rows)
  # Reader threads pay off when gathering decodes records; for arrays in memory, handing batches
  # between threads costs more than making them (and takes CPU from the step).
  threads = 0 if getattr(examples, "in_memory", False) else 2
  workers = iterator.default_workers(examples) if workers < 0 else workers
  return iterator.TrainIterator(lambda numbers: numbers.map(batches).map(gather), workers, threads)


def eval_batches(examples: Any, global_batch: int) -> Iterator[records.Batch]:
  """One ordered pass over this process's contiguous share, with "mask" (1 real, 0 padding).

  Every process yields the same number of equally shaped batches, as the jitted step needs.
  """
  count, index = jax.process_count(), jax.process_index()
  per_process = math.ceil(len(examples) / count)
  local_batch = global_batch // count
  start, stop = index * per_process, min(len(examples), (index + 1) * per_process)
  for b in range(math.ceil(per_process / local_batch)):
    indices = np.arange(start + b * local_batch, min(stop, start + (b + 1) * local_batch))
    real = len(indices)
    batch = trainer_batch(examples, np.pad(indices, (0, local_batch - real)))  # pads: example 0
    batch["mask"] = (np.arange(local_batch) < real).astype(np.float32)
    yield batch
