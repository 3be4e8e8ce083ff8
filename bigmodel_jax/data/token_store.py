"""A token store: one text split tokenized once, in a directory on disk or in a bucket, read by
token ranges when a batch needs them (never loaded whole, never copied to a host).

  STORE/manifest.json    written last, when every shard is done: what the store holds (below).
                         A directory without it is not a store a run reads.
  STORE/plan.json        the shards' parts, written first (a rerun continues the same plan)
  STORE/lease.json       while a process prepares it: who, refreshed every few seconds
  STORE/byte_table.bin   with a tokenizer whose tokens always stand for the same bytes (BPE,
                         a tokenizer.json): uint32, the bytes of text of each token id
  STORE/NNNNN.tokens     shard NNNNN's token ids, little-endian, dtype: the narrowest of uint8,
                         uint16, uint32 that holds the vocabulary
  STORE/NNNNN.starts     one bit per token (little-endian bit order): 1 where a document starts
  STORE/NNNNN.bytes      with SentencePiece (a piece's bytes depend on its place in the text):
                         the bytes of text each token stands for, uint8 / 16 / 32 per shard
  STORE/NNNNN.json       the shard's counts, written after its files: the shard is done

The split's tokens are the shards' in order, documents (each ended by the tokenizer's end of
sequence, when it has one) in the split's document order; windows cut across shards.
"""

import json
from typing import Any

import numpy as np

from bigmodel_jax import storage

FORMAT = 1
MANIFEST, PLAN, LEASE, BYTE_TABLE = "manifest.json", "plan.json", "lease.json", "byte_table.bin"


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536
                  else np.uint32)


def shard_file(store: str, index: int, kind: str) -> str:
  """kind: tokens, starts, bytes or json."""
  return storage.join(store, f"{index:05d}.{kind}")


def is_complete(store: str) -> bool:
  return storage.isfile(storage.join(store, MANIFEST))


class TokenStore:
  """A complete store, read lazily: `read(starts, length)` gives rows of `length` tokens from
  global token positions `starts`, with their document starts and bytes. Local shards are
  memory-mapped (pages read as touched); a bucket's are read by concurrent range requests."""

  def __init__(self, url: str):
    self.url = url
    self.manifest = json.loads(storage.read_text(storage.join(url, MANIFEST)))
    if self.manifest.get("format") != FORMAT:
      raise ValueError(f"token store {url} has format {self.manifest.get('format')}, not "
                       f"{FORMAT}: prepare it again (remove the directory)")
    self.shards = self.manifest["shards"]
    sizes = np.asarray([s["tokens"] for s in self.shards], np.int64)
    self.ends = np.cumsum(sizes)
    self.begins = self.ends - sizes
    self.dtype = np.dtype(self.manifest["dtype"])
    self.remote = storage.is_remote(url)
    self.byte_table = None
    if self.manifest["bytes"] == "table":
      self.byte_table = np.frombuffer(storage.read_bytes(storage.join(url, BYTE_TABLE)),
                                      "<u4").astype(np.int32)
    self._maps: dict[tuple[int, str], np.ndarray] = {}

  def __getstate__(self) -> dict[str, Any]:  # into Grain's worker processes: maps reopened there
    return {**self.__dict__, "_maps": {}}

  def __len__(self) -> int:
    return int(self.ends[-1]) if len(self.ends) else 0

  @property
  def has_bytes(self) -> bool:
    """Whether each token's bytes of text are known (a tokenizer's store; bytes: 1 each)."""
    return self.manifest["bytes"] != "none"

  def read(self, starts: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """{"tokens": B x length int32, "starts": B x length bool, "bytes": B x length int32 (when
    has_bytes)}: the tokens at positions [s, s + length) of the split for each s in starts."""
    n = len(starts)
    out = {"tokens": np.empty((n, length), np.int32), "starts": np.empty((n, length), bool)}
    stored_bytes = self.manifest["bytes"] == "stored"
    if stored_bytes:
      out["bytes"] = np.empty((n, length), np.int32)
    pieces = list(self._pieces(np.asarray(starts, np.int64), length))
    kinds = ["tokens", "starts"] + (["bytes"] if stored_bytes else [])
    for (row, col, shard, a, b), parts in zip(pieces, self._fetch(pieces, kinds)):
      for kind, values in zip(kinds, parts):
        out[kind][row, col:col + b - a] = values
    if self.byte_table is not None:
      out["bytes"] = self.byte_table[out["tokens"]]
    return out

  def _pieces(self, starts: np.ndarray, length: int):
    """(row, column, shard, start, stop) of every shard range the rows cover."""
    if len(starts) and (starts.min() < 0 or starts.max() + length > len(self)):
      raise IndexError(f"token range beyond the store's {len(self)} tokens")
    for row, s in enumerate(starts.tolist()):
      col = 0
      while col < length:
        shard = int(np.searchsorted(self.ends, s + col, side="right"))
        a = s + col - int(self.begins[shard])
        b = min(int(self.shards[shard]["tokens"]), a + length - col)
        yield row, col, shard, a, b
        col += b - a

  def _fetch(self, pieces: list[tuple[int, ...]], kinds: list[str]) -> list[list[np.ndarray]]:
    """Each piece's arrays of each kind: from the memory maps, or one batch of range reads."""
    if not self.remote:
      return [[self._local(shard, kind, a, b) for kind in kinds] for _, _, shard, a, b in pieces]
    paths, lo, hi = [], [], []
    for _, _, shard, a, b in pieces:
      for kind in kinds:
        first, last = self._byte_range(shard, kind, a, b)
        paths.append(shard_file(self.url, shard, kind))
        lo.append(first)
        hi.append(last)
    data = iter(storage.read_ranges(paths, lo, hi))
    return [[self._decode(shard, kind, a, b, next(data)) for kind in kinds]
            for _, _, shard, a, b in pieces]

  def _item_dtype(self, shard: int, kind: str) -> np.dtype:
    if kind == "tokens":
      return self.dtype
    return np.dtype(np.uint8) if kind == "starts" else np.dtype(self.shards[shard]["bytes_dtype"])

  def _byte_range(self, shard: int, kind: str, a: int, b: int) -> tuple[int, int]:
    if kind == "starts":
      return a // 8, (b + 7) // 8
    size = self._item_dtype(shard, kind).itemsize
    return a * size, b * size

  def _decode(self, shard: int, kind: str, a: int, b: int, data: bytes) -> np.ndarray:
    if kind == "starts":
      bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
      return bits[a % 8:a % 8 + b - a].astype(bool)
    return np.frombuffer(data, self._item_dtype(shard, kind).newbyteorder("<"))

  def _local(self, shard: int, kind: str, a: int, b: int) -> np.ndarray:
    key = (shard, kind)
    if key not in self._maps:
      dtype = self._item_dtype(shard, kind).newbyteorder("<")
      path = shard_file(self.url, shard, kind)
      self._maps[key] = (np.memmap(path, dtype, mode="r") if storage.size(path) else
                         np.zeros(0, dtype))
    first, last = self._byte_range(shard, kind, a, b)
    if kind == "starts":
      return self._decode(shard, kind, a, b, self._maps[key][first:last].tobytes())
    return self._maps[key][a:b]
