"""Text splits as examples (pipeline.py's contract: len, gather): a language model's token
windows, optionally packed (data.kind="lm"), and seq2seq question/answer pairs."""

from typing import Any

import ml_collections
import numpy as np

from bigmodel_jax.faults import ConfigError

Batch = dict[str, np.ndarray]
Rngs = list[np.random.Generator] | None


class TokenWindows:
  """A text split as tokens (bytes, or data.tokenizer's ids with its end of sequence after each
  document), concatenated in record order and cut into windows of seq_len + 1: window i covers
  tokens [i * seq_len, (i + 1) * seq_len + 1).

  Packed (data.packing): inputs are {"tokens", "segment_ids", "positions"}, a segment being one
  document's part of the window (positions restart at 0 in each), and "weights" is 0 for a
  label of another document than its input (the loss is on each document's own next tokens).
  With a tokenizer, "label_bytes" holds the bytes of text each label stands for."""

  in_memory = True

  def __init__(self, source: Any, cfg: ml_collections.ConfigDict, tok: Any = None,
               tokenizer_path: str = ""):
    texts = [bytes(source[i][cfg.input_key]) for i in range(len(source))]
    self.token_bytes = None  # with a tokenizer: the bytes of text each token stands for
    if tok is None:
      docs = [np.frombuffer(t, np.uint8) for t in texts]
    else:
      encoded = tok.documents([t.decode("utf-8", "replace") for t in texts])
      docs = [ids for ids, _ in encoded]
      self.token_bytes = (np.concatenate([b for _, b in encoded]) if encoded
                          else np.zeros(0, np.int32))
    self.tokens = np.concatenate(docs) if docs else np.zeros(0, np.int32)
    self.doc = (np.repeat(np.arange(len(docs), dtype=np.int32), [len(d) for d in docs])
                if cfg.packing else None)
    self.seq_len, self.tokenizer_path = cfg.seq_len, tokenizer_path

  def __len__(self) -> int:
    return max((len(self.tokens) - 1) // self.seq_len, 0)

  def gather(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    at = indices[:, None] * self.seq_len + np.arange(self.seq_len + 1)
    window = self.tokens[at].astype(np.int32)
    batch = {"inputs": window[:, :-1], "label": window[:, 1:]}
    if self.doc is not None:
      doc = self.doc[at]
      segments = doc[:, :-1] - doc[:, :1]
      t = np.arange(self.seq_len)
      starts = np.where(np.concatenate([np.ones((len(at), 1), bool),
                                        segments[:, 1:] != segments[:, :-1]], 1), t, 0)
      batch["inputs"] = {"tokens": window[:, :-1], "segment_ids": segments,
                         "positions": (t - np.maximum.accumulate(starts, axis=1)).astype(np.int32)}
      batch["weights"] = (doc[:, 1:] == doc[:, :-1]).astype(np.float32)
    if self.token_bytes is not None:
      batch["label_bytes"] = self.token_bytes[at[:, 1:]]
    return batch


PAD, BOS, EOS = 0, 1, 2


class TextPairs:
  """Question/answer text records -> padded byte sequences (data.seq_len, data.target_len)."""

  def __init__(self, source: Any, cfg: ml_collections.ConfigDict):
    self.source, self.input_key, self.label_key = source, cfg.input_key, cfg.label_key
    self.seq_len, self.target_len = cfg.seq_len, cfg.target_len

  def __len__(self) -> int:
    return len(self.source)

  def gather(self, indices: np.ndarray, rngs: Rngs = None) -> Batch:
    n, t = len(indices), self.target_len
    encoder = np.zeros((n, self.seq_len), np.int32)
    label = np.zeros((n, t), np.int32)
    for row, i in enumerate(indices.tolist()):
      example = self.source[i]
      question, answer = bytes(example[self.input_key]), bytes(example[self.label_key])
      if len(question) > self.seq_len or len(answer) + 1 > t:
        raise ConfigError(f"example {i} ({len(question)} + {len(answer)} bytes) does not fit "
                          f"data.seq_len={self.seq_len} / data.target_len={t} (answer + EOS)")
      encoder[row, :len(question)] = np.frombuffer(question, np.uint8)
      label[row, :len(answer) + 1] = [*answer, EOS]
    decoder = np.concatenate([np.full((n, 1), BOS, np.int32), label[:, :-1]], axis=1)
    weights = (np.arange(t) <= (label != PAD).sum(1, keepdims=True) - 1).astype(np.float32)
    return {"inputs": {"encoder": encoder, "decoder": decoder}, "label": label, "weights": weights}
