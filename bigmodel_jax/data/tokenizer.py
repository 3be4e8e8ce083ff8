"""Tokenizers of language-model data (data.tokenizer): Hugging Face `tokenizers` and SentencePiece.

  ""               bytes: token i is byte i (vocabulary 256), as before
  "bpe:N"          a byte-level BPE of at most N tokens (one of them <|endoftext|>, which ends
                   every document), trained on the data set's training split on first use and
                   stored with the data set (DATA_DIR/NAME/CONFIG/VERSION/tokenizer_bpeN.json);
                   every run on that data set then reads the same one, and a run copies it into
                   its workdir
  PATH             a tokenizer.json (e.g. the one convert copies from a Hugging Face directory)
  PATH.model       a SentencePiece model (tokenizer.model: Llama 2, Gemma, T5), read with the
                   sentencepiece library; its end-of-sequence piece ends every document

`documents` also says how many bytes of text each token stands for, so that bits per byte compare
byte-level, BPE and SentencePiece models: a byte-level BPE's token ids know their bytes; a
SentencePiece token covers the bytes from the end of the previous token's span in the original
text to the end of its own (the pieces' offsets), the document's last token what is left, so a
document's tokens count exactly its UTF-8 bytes whatever the normalization (special tokens: 0).
"""

import functools
import sys
import time
from typing import Any

import numpy as np

from bigmodel_jax import storage
from bigmodel_jax.faults import ConfigError

EOS = "<|endoftext|>"
FILES = ("tokenizer.model", "tokenizer.json")  # a workdir's copy; SentencePiece's first


def vocab_size(spec: str) -> int:
  """The model's vocabulary for data.tokenizer, known before any data is read."""
  if not spec:
    return 256
  if spec.startswith("bpe:"):
    return _bpe_size(spec)
  return load_file(spec).vocab_size


def _bpe_size(spec: str) -> int:
  try:
    n = int(spec[4:])
  except ValueError:
    n = 0
  if n < 257:
    raise ConfigError(f"data.tokenizer='{spec}': bpe:N needs N > 256 (the bytes and <|endoftext|>)")
  return n


def file_name(path: str) -> str:
  """The name a workdir keeps the tokenizer at `path` under (FILES)."""
  return FILES[0] if path.endswith(".model") else FILES[1]


def in_directory(directory: str) -> str:
  """The tokenizer file a workdir or Hugging Face directory has ("" if none)."""
  return next((p for p in (storage.join(directory, n) for n in FILES) if storage.isfile(p)), "")


@functools.lru_cache(maxsize=8)
def load_file(path: str) -> Any:
  """The tokenizer at path: SentencePiece's (.model) or a tokenizer.json."""
  if not storage.isfile(path):
    raise ConfigError(f"data.tokenizer {path}: no such tokenizer file")
  if path.endswith(".model"):
    import sentencepiece
    try:
      return SentencePiece(sentencepiece.SentencePieceProcessor(
          model_proto=storage.read_bytes(path)))
    except Exception as e:  # noqa: BLE001 (RuntimeError or a protobuf error)
      raise ConfigError(f"data.tokenizer {path}: not a SentencePiece model ({e})") from e
  from tokenizers import Tokenizer
  try:
    return HuggingFace(Tokenizer.from_str(storage.read_text(path)))
  except Exception as e:  # noqa: BLE001 (the library raises plain Exceptions)
    raise ConfigError(f"data.tokenizer {path}: not a tokenizer.json ({e})") from e


def stored_path(spec: str, home: str) -> str:
  """Where data.tokenizer's file is: PATH itself, or the trained one in the corpus's home."""
  if spec.startswith("bpe:"):
    return storage.join(home, f"tokenizer_bpe{_bpe_size(spec)}.json")
  return spec


def train_bpe(texts: Any, size: int, path: str) -> None:
  """A byte-level BPE (GPT-2's scheme) of at most `size` tokens over `texts`, written to path."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  start = time.time()
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=[EOS], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer)
  storage.write(path, tok.to_str(pretty=True))  # whole or not at all, locally or in a bucket
  # said after the fact: a bad document stops the training with its one-line error alone
  print(f"Trained a BPE tokenizer of {size} tokens on the training split in "
        f"{time.time() - start:.1f} s: {path}", file=sys.stderr, flush=True)


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


Document = tuple[np.ndarray, np.ndarray]  # token ids and the bytes of text each stands for


class HuggingFace:
  """A `tokenizers` tokenizer (tokenizer.json); <|endoftext|>, if it has one, ends documents."""

  def __init__(self, tok: Any):
    self.tok = tok
    self.vocab_size = tok.get_vocab_size()
    self.eos_id = tok.token_to_id(EOS)

  @functools.cached_property
  def byte_lengths(self) -> np.ndarray:
    """The bytes each token id stands for: computed when documents are first encoded (a whole
    vocabulary's pass, which sample and vocab_size do not need)."""
    return _byte_lengths(self.tok, self.vocab_size)

  @property
  def byte_table(self) -> np.ndarray:
    """The bytes of text each id stands for (a token's bytes do not depend on its context)."""
    return self.byte_lengths

  def ids(self, texts: list[str]) -> list[np.ndarray]:
    """Each text's ids (no special tokens; then <|endoftext|>), in one batch call."""
    eos = [] if self.eos_id is None else [self.eos_id]
    return [np.asarray(e.ids + eos, np.int64)
            for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

  def documents(self, texts: list[str]) -> list[Document]:
    """Each text's ids (as `ids`) and their bytes."""
    return [(ids, self.byte_lengths[ids]) for ids in self.ids(texts)]

  def encode(self, text: str) -> list[int]:
    return self.tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids: list[int]) -> str:
    return self.tok.decode(ids)


class SentencePiece:
  """A SentencePiece model (tokenizer.model); its end-of-sequence piece, if any, ends documents."""

  def __init__(self, sp: Any):
    self.sp = sp
    self.vocab_size = sp.get_piece_size()
    self.eos_id = sp.eos_id() if sp.eos_id() >= 0 else None

  byte_table = None  # a piece's bytes depend on where it falls in the original text

  def documents(self, texts: list[str]) -> list[Document]:
    """Each text's ids (no BOS; then EOS) and the bytes each covers (the module's docstring)."""
    out = []
    for text, proto in zip(texts, self.sp.encode(texts, return_type="proto")):
      ends = np.asarray([p.end for p in proto.pieces], np.int32)
      covered = np.diff(ends, prepend=0)
      ids = [p.id for p in proto.pieces]
      rest = len(text.encode()) - (int(ends[-1]) if len(ends) else 0)  # what no piece covers
      if self.eos_id is not None:
        ids, covered = ids + [self.eos_id], np.append(covered, 0)
      if len(covered):
        covered[-1] += rest
      out.append((np.asarray(ids, np.int32), covered.astype(np.int32)))
    return out

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def decode(self, ids: list[int]) -> str:
    return self.sp.decode(ids)


def _byte_lengths(tok: Any, size: int) -> np.ndarray:
  """size int32: the bytes of text each token id stands for."""
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


def encode_one(tok: Any, text: str) -> list[int]:
  """One text -> token ids: a tokenizer's (no special tokens), or its bytes (tok None)."""
  return list(text.encode()) if tok is None else tok.encode(text)


def decode(tok: Any, tokens: list[int]) -> str:
  """Token ids -> text: a tokenizer's, or bytes (tok None; invalid UTF-8 replaced)."""
  return bytes(tokens).decode("utf-8", errors="replace") if tok is None else tok.decode(tokens)
