"""A word-level tokenizer for the offline paired data sets (data/paired_digits.py): the text
is lowercase words from fixed templates, so the vocabulary is every word the templates can
write, stored in the data set's metadata ("vocabulary") and pinned by the builder's version.

Ids: 0 PAD, 1 BOS, 2 EOS, then the words in sorted order. A text is its words' ids, then EOS,
then PAD up to a fixed length.
"""

from collections.abc import Iterable, Sequence

import numpy as np

SPECIAL = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = 0, 1, 2


class Words:
  def __init__(self, vocabulary: Sequence[str]):
    if tuple(vocabulary[:len(SPECIAL)]) != SPECIAL:
      raise ValueError(f"a word vocabulary starts with {SPECIAL}")
    self.vocabulary = list(vocabulary)
    self.ids = {w: i for i, w in enumerate(self.vocabulary)}

  @classmethod
  def from_texts(cls, texts: Iterable[str]) -> "Words":
    return cls([*SPECIAL, *sorted({w for t in texts for w in t.split()})])

  def __len__(self) -> int:
    return len(self.vocabulary)

  def encode(self, text: str, length: int) -> np.ndarray:
    """int32 ids of `length`: the words, EOS, PAD; ValueError for an unknown word or a text
    that does not fit."""
    words = text.split()
    unknown = [w for w in words if w not in self.ids]
    if unknown:
      raise ValueError(f"words not in the vocabulary: {', '.join(unknown)}")
    if len(words) + 1 > length:
      raise ValueError(f"'{text}' has {len(words)} words; at most {length - 1} fit")
    out = np.zeros(length, np.int32)
    out[:len(words) + 1] = [*(self.ids[w] for w in words), EOS]
    return out

  def decode(self, ids: Iterable[int]) -> str:
    """The words up to the first EOS (PAD and BOS skipped)."""
    words = []
    for i in map(int, ids):
      if i == EOS:
        break
      if i > EOS:
        words.append(self.vocabulary[i] if i < len(self.vocabulary) else "<unk>")
    return " ".join(words)
