"""data.kind=seq2seq: a TFDS data set's question/answer texts (data.input_key, data.label_key) as
padded byte sequences: PAD 0, BOS 1, EOS 2; the decoder reads BOS + answer, the label is answer +
EOS. Batches are {"inputs": {"encoder": B x S, "decoder": B x T}, "label": B x T, "weights": B x T}
(S = data.seq_len, T = data.target_len)."""

from typing import Any

import jax
import ml_collections
import numpy as np

from bigmodel_jax.data import records, tfds_source
from bigmodel_jax.data.source import Batch, Sources
from bigmodel_jax.faults import ConfigError

KEYS = ("seq_len", "target_len", "cache")
PAD, BOS, EOS = 0, 1, 2


def _builder(cfg: ml_collections.ConfigDict) -> Any:
  b = tfds_source.builder(cfg)
  tfds_source.check_features(cfg, b, (cfg.input_key, cfg.label_key), text=True)
  return b


def input_spec(cfg: ml_collections.ConfigDict) -> tuple[Any, int]:
  _builder(cfg)
  spec = lambda n: jax.ShapeDtypeStruct((1, n), np.int32)  # noqa: E731
  return {"encoder": spec(cfg.seq_len), "decoder": spec(cfg.target_len)}, 256


def load(cfg: ml_collections.ConfigDict) -> Sources:
  train, eval_ = (TextPairs(s, cfg) for s in tfds_source.open_splits(cfg, _builder(cfg)))
  if cfg.cache:
    train, eval_ = records.InMemory(train), records.InMemory(eval_)
  return Sources(train=train, eval=eval_, num_outputs=256)


class TextPairs:
  """Question/answer text records -> padded byte sequences (data.seq_len, data.target_len)."""

  def __init__(self, source: Any, cfg: ml_collections.ConfigDict):
    self.source, self.input_key, self.label_key = source, cfg.input_key, cfg.label_key
    self.seq_len, self.target_len = cfg.seq_len, cfg.target_len

  def __len__(self) -> int:
    return len(self.source)

  def gather(self, indices: np.ndarray, rngs: Any = None) -> Batch:
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
