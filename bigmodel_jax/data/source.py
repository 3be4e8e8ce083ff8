"""The seam between the input pipeline (pipeline.py) and the data: a data source per data.kind,
and the examples objects it gives.

A DataSource is a module (pipeline.KINDS maps data.kind to it):

  KEYS                          the data.* options it reads beyond the shared ones
                                (SHARED_KEYS)
  input_spec(cfg)               (inputs of one example as ShapeDtypeStructs with a batch axis
                                of 1, number of outputs), from metadata alone (--dry_run,
                                summary, loading a workdir): no data read or prepared
  load(cfg) -> Sources          the train and eval examples, prepared on first use

  classification.py  TFDS records: images, or any arrays with a class label
  lm.py              token windows of one corpus or a mixture (token stores)
  seq2seq.py         question/answer texts as padded bytes
  paired.py          an image, a text of word ids and a class label

Examples: `len(examples)` and `examples.gather(indices, rngs) -> batch of arrays` (rngs: one
numpy Generator per example when training batches are augmented, else None), with optional
attributes: `random` (training batches need those RNGs), `in_memory` (gathering is a cheap
array index: no reader threads), `decodes_files` (gathering decodes encoded files: worker
processes pay off), `sampler(global_batch, seed)` (a mixture draws its own batches:
mixture.py), `epochs(rows)` and `describe(rows)` (a mixture's epochs per part, logged, and its
console line).
"""

import dataclasses
from typing import Any, Protocol

import ml_collections
import numpy as np

Batch = dict[str, Any]
SHARED_KEYS = ("name", "kind", "data_dir", "train_split", "eval_split", "input_key", "label_key",
               "workers")


class Examples(Protocol):
  def __len__(self) -> int: ...

  def gather(self, indices: np.ndarray, rngs: list[np.random.Generator] | None = None
             ) -> Batch: ...


@dataclasses.dataclass(frozen=True)
class Sources:
  train: Examples
  eval: Examples | dict[str, Examples]  # several: evaluated one by one (tasks, corpora)
  num_outputs: Any  # classes, the vocabulary size, or a paired data set's outputs
  tokenizer_path: str = ""  # a language model's tokenizer file (a workdir keeps a copy)


class DataSource(Protocol):
  KEYS: tuple[str, ...]

  def input_spec(self, cfg: ml_collections.ConfigDict) -> tuple[Any, Any]: ...

  def load(self, cfg: ml_collections.ConfigDict) -> Sources: ...
