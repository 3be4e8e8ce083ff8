"""The training iterator: a checkpointable stream of batches, read by threads or by Grain's
worker processes (config.data.workers). GlobalBatch maps a batch number to its example indices,
Gather to this process's rows of them, as the examples' trainer_batch makes them.

Its state is the number of the next batch, {"next_index": N} (Grain's own form for a dataset of
batch numbers), whatever the workers: a checkpoint taken with 8 workers resumes with none, on
another machine, and both give the same batches, because batch N is a pure function of N (the
seed, the epoch's permutation and each example's RNG: GlobalBatch and Gather).
"""

import json
import os
import threading
from collections.abc import Callable
from typing import Any

import grain
import numpy as np
from absl import flags

BATCHES = 2**62  # batch numbers: endless
Batch = dict[str, np.ndarray]
Rngs = list[np.random.Generator] | None


class GlobalBatch(grain.transforms.Map):
  """Batch number b -> (example indices, stream positions) of global batch b: positions
  [b * B, (b + 1) * B) of an endless stream that visits the split in a new random order each
  epoch (a permutation seeded by (seed, epoch), or (seed, epoch, stream) for stream > 0: one of
  several independent orders, as a mixture of tasks needs). Vectorized: one Grain element per batch."""

  def __init__(self, num_examples: int, global_batch: int, seed: int, stream: int = 0):
    self.n, self.batch = num_examples, global_batch
    self.key = (seed,) if stream == 0 else (seed, stream)
    self._orders: dict[int, np.ndarray] = {}  # the permutations of the last epochs used
    self._lock = threading.Lock()  # Grain maps on several threads

  def __getstate__(self) -> dict[str, Any]:  # pickled into Grain's worker processes
    return {**self.__dict__, "_orders": {}, "_lock": None}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state, _lock=threading.Lock())

  def _order(self, epoch: int) -> np.ndarray:
    with self._lock:
      if epoch not in self._orders:
        if len(self._orders) >= 3:
          del self._orders[min(self._orders)]
        rng = np.random.default_rng((self.key[0], epoch, *self.key[1:]))
        self._orders[epoch] = rng.permutation(self.n)
      return self._orders[epoch]

  def map(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    positions = int(b) * self.batch + np.arange(self.batch, dtype=np.int64)
    epochs, within = np.divmod(positions, self.n)
    if epochs[0] == epochs[-1]:  # the usual case: the batch lies within one epoch
      return self._order(int(epochs[0]))[within], positions
    indices = np.empty_like(positions)
    for epoch in np.unique(epochs):
      rows = epochs == epoch
      indices[rows] = self._order(int(epoch))[within[rows]]
    return indices, positions


class Gather(grain.transforms.Map):
  """A global batch of (example indices, stream positions) -> this process's rows of the batch.

  When the examples are augmented at random, each one's RNG is seeded from (seed, position), so a
  resumed iterator, or the same run on another number of processes or devices, repeats it
  exactly."""

  def __init__(self, examples: Any, seed: int, rows: slice):
    self.examples, self.seed, self.rows = examples, seed, rows

  def map(self, element: tuple[np.ndarray, np.ndarray]) -> Batch:
    indices, positions = (np.asarray(a)[self.rows] for a in element)
    rngs = None
    if getattr(self.examples, "random", False):
      rngs = [np.random.default_rng((self.seed, int(p))) for p in positions]
    return trainer_batch(self.examples, indices, rngs)


def trainer_batch(examples: Any, indices: np.ndarray, rngs: Rngs = None) -> Batch:
  """The examples' batch as the trainer's steps take it: uint8 images stay uint8 (normalized in
  the step, images.Normalize); everything else as `gather` gives it."""
  gather = getattr(examples, "gather_uint8", examples.gather)
  return gather(indices, rngs)


def default_workers(examples: Any) -> int:
  """data.workers=-1: one process per core where examples are decoded per batch from encoded
  files (images cropped from JPEG / PNG); none where gathering is cheap (arrays in memory, small
  records), as handing batches between processes would cost more than making them."""
  return os.cpu_count() or 1 if getattr(examples, "decodes_files", False) else 0


class TrainIterator:
  """Batches from `batches(dataset of batch numbers) -> dataset of batches`, starting anywhere."""

  def __init__(self, batches: Callable[[grain.MapDataset], grain.MapDataset], workers: int,
               threads: int):
    self.batches, self.workers, self.threads = batches, workers, threads
    self.next_index, self._it = 0, None

  def _start(self) -> None:
    dataset = self.batches(grain.MapDataset.range(self.next_index, BATCHES))
    if self.workers:  # each worker makes every workers-th batch; they come back in order
      if not flags.FLAGS.is_parsed():  # Grain reads its absl flags (library use, tests)
        flags.FLAGS.mark_as_parsed()
      # one thread per worker: a worker is one core's work (Grain's default is 16 threads each)
      it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0)).mp_prefetch(
          grain.MultiprocessingOptions(num_workers=self.workers, per_worker_buffer_size=2))
    else:
      it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                                     prefetch_buffer_size=2 * self.threads))
    self._it = iter(it)

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> Any:
    if self._it is None:
      self._start()
    batch = next(self._it)
    self.next_index += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"next_index": self.next_index}

  def set_state(self, state: dict[str, int] | bytes) -> None:
    """A state from get_state, or its JSON (Grain's checkpoint handler passes bytes)."""
    if isinstance(state, bytes):
      state = json.loads(state.decode())
    self.close()
    self.next_index = int(state["next_index"])

  def start_prefetch(self) -> None:  # Grain's checkpoint handler calls it after set_state
    pass

  def close(self) -> None:
    """Stops the worker processes (or reader threads); the next batch starts them again."""
    if self._it is not None and hasattr(self._it, "close"):
      self._it.close()
    self._it = None
