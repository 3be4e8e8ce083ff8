"""A language model's examples (pipeline.py's contract: len, gather): a token store's split
(token_store.py) cut into windows of seq_len + 1 tokens, read from the store per batch.

Window i covers tokens [i * seq_len, (i + 1) * seq_len + 1) of the split's tokens (documents
concatenated in order, each ended by the tokenizer's end of sequence): inputs are its first
seq_len tokens, labels the last seq_len. Packed (data.packing): inputs are {"tokens",
"segment_ids", "positions"}, a segment being one document's part of the window (positions
restart at 0 in each), and "weights" is 0 for a label of another document than its input (the
loss is on each document's own next tokens). With a tokenizer, "label_bytes" holds the bytes of
text each label stands for (bits per byte compare any tokenizers).
"""

import numpy as np

from bigmodel_jax.data.token_store import TokenStore

Batch = dict[str, np.ndarray]
Rngs = list[np.random.Generator] | None


class TokenWindows:
  def __init__(self, store: TokenStore, seq_len: int, packing: bool):
    self.store, self.seq_len, self.packing = store, seq_len, packing
    self.in_memory = not store.remote  # memory-mapped: gathering is cheap (no reader threads)

  def __len__(self) -> int:
    return max((len(self.store) - 1) // self.seq_len, 0)

  def gather(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    del rngs  # windows are read as they are
    read = self.store.read(np.asarray(indices, np.int64) * self.seq_len, self.seq_len + 1)
    window = read["tokens"]
    batch = {"inputs": window[:, :-1], "label": window[:, 1:]}
    if self.packing:
      # a window's documents, numbered from 0: the document starts after its first token
      doc = np.cumsum(read["starts"][:, 1:], axis=1)
      doc = np.concatenate([np.zeros((len(window), 1), doc.dtype), doc], axis=1).astype(np.int32)
      segments = doc[:, :-1]
      t = np.arange(self.seq_len)
      starts = np.where(np.concatenate([np.ones((len(window), 1), bool),
                                        segments[:, 1:] != segments[:, :-1]], 1), t, 0)
      batch["inputs"] = {"tokens": window[:, :-1], "segment_ids": segments,
                         "positions": (t - np.maximum.accumulate(starts, axis=1)).astype(np.int32)}
      batch["weights"] = (doc[:, 1:] == doc[:, :-1]).astype(np.float32)
    if self.store.has_bytes:
      batch["label_bytes"] = read["bytes"][:, 1:]
    return batch
