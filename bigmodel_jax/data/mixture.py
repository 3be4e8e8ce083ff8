"""Several examples objects trained as one: a Mixture's index space is its parts' one after the
other, and a sampler (a Grain map of batch number -> (indices, stream positions)) fills each
global batch from the parts' own endless shuffled orders. Two samplers:

  FixedRows    every batch holds a fixed number of rows of each part (largest remainder of
               the weights); the rows shuffled together. Multi-task training (tasks.py).
  Interleaved  row p of the endless stream goes to part k by a chain of Beatty sequences over the
               normalized weights: over any n consecutive rows a part's count is within 2 of
               n * weight, whatever the batch size, and each row's part and that part's own
               position are computed from p alone. Mixtures of corpora (lm.py).

Each part walks its own order (iterator.GlobalBatch's permutations with a stream of its own) and
counts its own epochs, so a mixture resumes and re-shards exactly like one data set.
"""

import math
from typing import Any

import grain
import jax
import numpy as np

from bigmodel_jax.data import iterator

Batch = dict[str, np.ndarray]
Rngs = list[np.random.Generator] | None


class Mixture:
  """parts as one index space (index i is example i - offsets[k] of part k)."""

  def __init__(self, parts: list[Any], names: list[str], weights: list[float]):
    self.parts, self.names, self.weights = parts, names, weights
    self.offsets = np.cumsum([0] + [len(p) for p in parts])
    self.random = any(getattr(p, "random", False) for p in parts)
    self.in_memory = all(getattr(p, "in_memory", False) for p in parts)

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def part_of(self, indices: np.ndarray) -> np.ndarray:
    return np.searchsorted(self.offsets, indices, side="right") - 1

  def gather(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    indices = np.asarray(indices)
    part_of = self.part_of(indices)
    out = None
    for k in np.unique(part_of):
      rows = np.flatnonzero(part_of == k)
      part = self.parts[k].gather(indices[rows] - self.offsets[k],
                                  None if rngs is None else [rngs[r] for r in rows])
      if out is None:
        out = jax.tree.map(lambda v: np.empty((len(indices), *v.shape[1:]), v.dtype), part)
      jax.tree.map(lambda o, v: o.__setitem__(rows, v), out, part)  # noqa: B023
    return out


class FixedRows(grain.transforms.Map):
  """Batch number b -> (indices into the Mixture, stream positions) of global batch b: rows[k]
  examples from part k's own shuffled stream (GlobalBatch, stream k + 1), rows shuffled together.
  Positions are unique across parts (part stream position * parts + k), for augmentation RNGs."""

  def __init__(self, mixture: Mixture, rows: list[int], seed: int):
    self.streams = [iterator.GlobalBatch(len(part), k, seed, stream=t + 1)
                    for t, (part, k) in enumerate(zip(mixture.parts, rows))]
    self.offsets, self.seed, self.batch = mixture.offsets, seed, sum(rows)

  def map(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [stream.map(b) for stream in self.streams]
    count = len(parts)
    indices = np.concatenate([i + self.offsets[t] for t, (i, _) in enumerate(parts)])
    positions = np.concatenate([p * count + t for t, (_, p) in enumerate(parts)])
    order = np.random.default_rng((self.seed, int(b), count)).permutation(self.batch)
    return indices[order], positions[order]


class Interleaved(grain.transforms.Map):
  """Batch number b -> (indices into the Mixture, stream positions): the rows b * B .. b * B +
  B - 1 of an endless stream, each given to a part by `assign` and read at that part's next
  position in its own shuffled order (epoch q // n, a permutation seeded by (seed, epoch, k + 1))."""

  def __init__(self, mixture: Mixture, global_batch: int, seed: int):
    self.fractions = chain_fractions(mixture.weights)
    self.orders = [iterator.GlobalBatch(len(p), 1, seed, stream=k + 1)
                   for k, p in enumerate(mixture.parts)]
    self.offsets, self.batch = mixture.offsets, global_batch

  def map(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    positions = int(b) * self.batch + np.arange(self.batch, dtype=np.int64)
    part, q = assign(self.fractions, positions)
    indices = np.empty_like(positions)
    for k in np.unique(part):
      rows = part == k
      indices[rows] = self.orders[k].at(q[rows]) + self.offsets[k]
    return indices, positions


def chain_fractions(weights: list[float]) -> list[float]:
  """The share of what is left that each part takes, in order: w_k / (w_k + ... + w_last)."""
  out = []
  for k, w in enumerate(weights[:-1]):
    rest = sum(weights[k:])
    out.append(1.0 if rest <= 0 or w >= rest else w / rest)
  return out


def _taken(x: np.ndarray, a: float) -> np.ndarray:
  """Rows among the first x of a stream that a part taking fraction a of it gets: round(x a).
  Its increments are 0 or 1, so row x is the part's iff taken(x + 1) > taken(x)."""
  return np.floor(x * a + 0.5).astype(np.int64) if a < 1.0 else x


def assign(fractions: list[float], positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(part, position within that part's own stream) of each stream row."""
  part = np.full(len(positions), len(fractions), np.int64)
  q = np.asarray(positions, np.int64).copy()
  open_ = np.ones(len(q), bool)
  for k, a in enumerate(fractions):
    rows = np.flatnonzero(open_)
    x = q[rows]
    before, after = _taken(x, a), _taken(x + 1, a)
    mine = after > before
    part[rows[mine]] = k
    q[rows[mine]] = before[mine]
    q[rows[~mine]] = x[~mine] - before[~mine]
    open_[rows[mine]] = False
  return part, q


def counts(fractions: list[float], rows: int) -> list[int]:
  """How many of the first `rows` stream rows each part gets."""
  out, left = [], np.asarray([rows], np.int64)
  for a in fractions:
    taken = _taken(left, a)
    out.append(int(taken[0]))
    left = left - taken
  return out + [int(left[0])]


def normalized(weights: list[float]) -> list[float]:
  total = math.fsum(weights)
  return [w / total for w in weights]
