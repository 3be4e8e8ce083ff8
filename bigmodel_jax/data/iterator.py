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


IN_MEMORY_ORDER = 1 << 24  # epochs of up to this many examples are numpy permutations


class GlobalBatch(grain.transforms.Map):
  """Batch number b -> (example indices, stream positions) of global batch b: positions
  [b * B, (b + 1) * B) of an endless stream that visits the split in a new random order each
  epoch (a permutation seeded by (seed, epoch), or (seed, epoch, stream) for stream > 0: one of
  several independent orders, as a mixture needs). Vectorized: one Grain element per batch.

  An epoch of up to IN_MEMORY_ORDER examples is numpy's permutation (8 bytes an example, the
  last few epochs cached); a larger one (a corpus of billions of windows) is a Feistel
  permutation computed per position, in no memory."""

  def __init__(self, num_examples: int, global_batch: int, seed: int, stream: int = 0):
    self.n, self.batch = num_examples, global_batch
    self.key = (seed,) if stream == 0 else (seed, stream)
    self._orders: dict[int, Any] = {}  # the permutations of the last epochs used
    self._lock = threading.Lock()  # Grain maps on several threads

  def __getstate__(self) -> dict[str, Any]:  # pickled into Grain's worker processes
    return {**self.__dict__, "_orders": {}, "_lock": None}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state, _lock=threading.Lock())

  def _order(self, epoch: int) -> Any:
    with self._lock:
      if epoch not in self._orders:
        if len(self._orders) >= 3:
          del self._orders[min(self._orders)]
        seed = (self.key[0], epoch, *self.key[1:])
        self._orders[epoch] = (np.random.default_rng(seed).permutation(self.n)
                               if self.n <= IN_MEMORY_ORDER else Feistel(self.n, seed))
      return self._orders[epoch]

  def at(self, positions: np.ndarray) -> np.ndarray:
    """The example at each position of the endless stream."""
    epochs, within = np.divmod(np.asarray(positions, np.int64), self.n)
    if len(epochs) and epochs[0] == epochs[-1]:  # the usual case: within one epoch
      return self._order(int(epochs[0]))[within]
    indices = np.empty_like(within)
    for epoch in np.unique(epochs):
      rows = epochs == epoch
      indices[rows] = self._order(int(epoch))[within[rows]]
    return indices

  def map(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    positions = int(b) * self.batch + np.arange(self.batch, dtype=np.int64)
    return self.at(positions), positions


class Feistel:
  """A pseudo-random permutation of range(n), evaluated at any positions without a table: a
  balanced Feistel network of ROUNDS rounds over the smallest even number of bits that covers
  n, whose outputs of n or more are encrypted again until they fall in range (a bijection of
  range(n); on average under 4 passes). Integer arithmetic only: the same on every machine."""

  ROUNDS = 6

  def __init__(self, n: int, seed: tuple[int, ...]):
    bits = max(2, (n - 1).bit_length())
    self.n, self.half = n, (bits + 1) // 2
    self.mask = np.uint64((1 << self.half) - 1)
    self.keys = np.random.default_rng(seed).integers(0, 2**63, self.ROUNDS, dtype=np.uint64)

  def _encrypt(self, x: np.ndarray) -> np.ndarray:
    half = np.uint64(self.half)
    left, right = x >> half, x & self.mask
    for key in self.keys:
      z = (right ^ key) * np.uint64(0x9E3779B97F4A7C15)  # splitmix64's mixing of right and key
      z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
      z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
      left, right = right, left ^ ((z ^ (z >> np.uint64(31))) & self.mask)
    return (left << half) | right

  def __getitem__(self, positions: np.ndarray) -> np.ndarray:
    x = self._encrypt(np.asarray(positions, np.int64).astype(np.uint64))
    out = x >= np.uint64(self.n)
    while out.any():
      x[out] = self._encrypt(x[out])
      out = x >= np.uint64(self.n)
    return x.astype(np.int64)


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
