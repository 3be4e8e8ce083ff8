"""Tokenizers of language-model data (data.tokenizer), with the Hugging Face `tokenizers` library.

  ""         bytes: token i is byte i (vocabulary 256), as before
  "bpe:N"    a byte-level BPE of at most N tokens (one of them <|endoftext|>, which ends every
             document), trained on the data set's training split on first use and stored with
             the data set (DATA_DIR/NAME/CONFIG/VERSION/tokenizer_bpeN.json); every run on that
             data set then reads the same one, and a run copies it into its workdir
  PATH       a tokenizer.json (e.g. the one convert copies from a Hugging Face directory)

`byte_lengths` says how many bytes of text each token stands for, so that bits per byte compare
byte-level and BPE models (special tokens: 0).
"""

import functools
import os
import sys
from typing import Any

import numpy as np

from bigmodel_jax import storage
from bigmodel_jax.faults import ConfigError

EOS = "<|endoftext|>"


def vocab_size(spec: str) -> int:
  """The model's vocabulary for data.tokenizer, known before any data is read."""
  if not spec:
    return 256
  if spec.startswith("bpe:"):
    return _bpe_size(spec)
  return load_file(spec).get_vocab_size()


def _bpe_size(spec: str) -> int:
  try:
    n = int(spec[4:])
  except ValueError:
    n = 0
  if n < 257:
    raise ConfigError(f"data.tokenizer='{spec}': bpe:N needs N > 256 (the bytes and <|endoftext|>)")
  return n


@functools.lru_cache(maxsize=8)
def load_file(path: str) -> Any:
  from tokenizers import Tokenizer
  if not storage.isfile(path):
    raise ConfigError(f"data.tokenizer {path}: no such tokenizer file")
  try:
    return Tokenizer.from_str(storage.read_text(path))
  except Exception as e:  # noqa: BLE001 (the library raises plain Exceptions)
    raise ConfigError(f"data.tokenizer {path}: not a tokenizer.json ({e})") from e


def stored_path(spec: str, dataset_dir: str) -> str:
  """Where data.tokenizer's file is: PATH itself, or the trained one beside the data set."""
  if spec.startswith("bpe:"):
    return os.path.join(dataset_dir, f"tokenizer_bpe{_bpe_size(spec)}.json")
  return spec


def train_bpe(texts: Any, size: int, path: str) -> None:
  """A byte-level BPE (GPT-2's scheme) of at most `size` tokens over `texts`, written to path."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  print(f"Training a BPE tokenizer of {size} tokens on the training split ...", file=sys.stderr,
        flush=True)
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=[EOS], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer)
  tmp = f"{path}.tmp{os.getpid()}"
  tok.save(tmp)
  os.replace(tmp, path)


def _unicode_to_byte() -> dict[str, int]:
  """The inverse of the byte-level alphabet (GPT-2's bytes_to_unicode)."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  chars, n = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:
      chars[chr(256 + n)] = b
      n += 1
  return chars


def byte_lengths(tok: Any, size: int) -> np.ndarray:
  """size int32: the bytes of text each token id stands for (ids past the tokenizer's: 0)."""
  out = np.zeros(size, np.int32)
  alphabet = _unicode_to_byte()
  special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
  for piece, i in tok.get_vocab().items():
    if i >= size or piece in special:
      continue
    if all(c in alphabet for c in piece):  # byte-level: one character per byte
      out[i] = len(piece)
    else:  # another scheme (SentencePiece-style): the bytes its decoding gives
      out[i] = len(tok.decode([i]).encode("utf-8"))
  return out


def eos_id(tok: Any) -> int | None:
  return tok.token_to_id(EOS)


def encode(tok: Any, texts: list[str]) -> list[np.ndarray]:
  """Documents -> token ids, each an int32 array (no special tokens)."""
  return [np.asarray(e.ids, np.int32) for e in tok.encode_batch(texts, add_special_tokens=False)]


def encode_one(tok: Any, text: str) -> list[int]:
  """One text -> token ids: a tokenizer's (no special tokens), or its bytes (tok None)."""
  return list(text.encode()) if tok is None else tok.encode(text, add_special_tokens=False).ids


def decode(tok: Any, tokens: list[int]) -> str:
  """Token ids -> text: a tokenizer's, or bytes (tok None; invalid UTF-8 replaced)."""
  return bytes(tokens).decode("utf-8", errors="replace") if tok is None else tok.decode(tokens)
