"""data.kind=lm: a language model's windows (windows.py) read from token stores (token_store.py),
of one corpus (config.data) or of a weighted mixture of corpora (config.data.corpora).

A corpus is data.name=textdir over data.text_dir (corpus.py: .txt, .jsonl(.gz/.zst), .parquet)
or a TFDS data set with a text feature data.input_key (pycode, or the catalogue's). Each of its
splits is tokenized once (prepare_store.py) into a store in the corpus's home, keyed by the
split's content and the tokenizer's bytes:

  DATA_DIR/textdir/NAME_KEY/           a text directory's home (DATA_DIR: data.data_dir, else
                                       TFDS's: $TFDS_DATA_DIR or ~/tensorflow_datasets; a bucket
                                       too, where every host reads the stores directly)
  DATA_DIR/NAME/CONFIG/VERSION/        a TFDS data set's (its own version directory)
    tokenizer_bpeN.json                data.tokenizer=bpe:N, trained on the training split once
    tokens/SPLIT_TOKENIZER/            a split's token store

A mixture (data.corpora.NAME = {"weight": w, ...overrides of CORPUS_KEYS}) trains on the corpora
in proportion to their normalized weights, row by row (mixture.Interleaved), each corpus in its
own shuffled order and epochs (train/epochs/NAME); evaluation reports each corpus's metrics
(eval/NAME/bits_per_byte) and their mean. Its bpe:N tokenizer is trained on every corpus's
training split, in name order, and kept in DATA_DIR/mixtures/KEY/. Every batch row of a mixture
carries "source", its corpus's index in name order.
"""

import dataclasses
import hashlib
import os
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from bigmodel_jax import config_rules, storage
from bigmodel_jax.data import corpus, mixture, prepare_store, tfds_source, tokenizer
from bigmodel_jax.data.source import Sources
from bigmodel_jax.data.token_store import TokenStore
from bigmodel_jax.data.windows import TokenWindows
from bigmodel_jax.faults import ConfigError

KEYS = ("seq_len", "tokenizer", "packing", "text_dir", "text_field", "corpora")
# What a corpus of a mixture may set for itself; the other data keys (tokenizer, seq_len,
# packing, workers, ...) are the mixture's, shared by every corpus.
CORPUS_KEYS = ("name", "text_dir", "text_field", "input_key", "data_dir", "train_split",
               "eval_split")


def corpus_configs(cfg: ml_collections.ConfigDict) -> dict[str, tuple[float, Any]]:
  """Corpus name -> (weight, its data config); the one corpus config.data ("") without corpora."""
  if not cfg.corpora:
    return {"": (1.0, cfg)}
  out, seen = {}, {}
  for name in sorted(cfg.corpora):
    spec = cfg.corpora[name]
    key = f"data.corpora.{name}"
    if not isinstance(spec, ml_collections.ConfigDict):
      raise ConfigError(f"{key} must be a dict of a weight and data overrides (e.g. "
                        f"{{'weight': 0.5, 'text_dir': DIR}}), got {spec!r}")
    overrides = spec.to_dict()
    weight = overrides.pop("weight", None)
    if not (config_rules.is_finite(weight) and weight >= 0):
      raise ConfigError(f"{key}.weight must be a finite number >= 0, got {weight!r}")
    for k in overrides:
      if k not in CORPUS_KEYS:
        shared = k in cfg
        raise ConfigError(f"{key}.{k}: " + (
            f"data.{k} is shared by every corpus (one model reads them all); set it on data"
            if shared else f"not a corpus key; a corpus sets weight and "
                           f"{', '.join(CORPUS_KEYS)}"))
    c = ml_collections.ConfigDict({k: v for k, v in cfg.to_dict().items() if k != "corpora"})
    c.update(overrides)
    c.corpora = ml_collections.ConfigDict()
    if c.text_dir and c.name != "textdir":
      raise ConfigError(f"{key}.text_dir is read by data set textdir, not '{c.name}': set "
                        f"{key}.name=textdir, or leave its text_dir empty")
    identity = _identity(c)
    if identity in seen:
      raise ConfigError(f"{key} and data.corpora.{seen[identity]} are the same corpus "
                        f"({identity[1] or identity[0]}): name it once, with the weight of both")
    seen[identity] = name
    out[name] = (float(weight), c)
  if not any(w > 0 for w, _ in out.values()):
    raise ConfigError("data.corpora: every weight is 0; give at least one corpus a weight > 0")
  return out


def _identity(c: ml_collections.ConfigDict) -> tuple[str, ...]:
  if c.name == "textdir":
    return ("textdir", storage.absolute(c.text_dir) if c.text_dir else "", c.text_field)
  return (c.name, c.data_dir, c.input_key)


def check(cfg: ml_collections.ConfigDict) -> None:
  """What needs no data: the corpora's keys and weights, the tokenizer's name."""
  for _, c in corpus_configs(cfg).values():
    if c.name == "textdir" and not c.text_dir:
      raise ConfigError("data set textdir reads data.text_dir: set it to a directory of "
                        f"{', '.join(corpus.SUFFIXES)} files")
  if cfg.tokenizer.startswith("bpe:"):
    tokenizer.vocab_size(cfg.tokenizer)  # N > 256


def input_spec(cfg: ml_collections.ConfigDict) -> tuple[Any, int]:
  """The windows' inputs (no text read; a TFDS corpus's features checked) and the vocabulary."""
  for _, c in corpus_configs(cfg).values():
    if c.name != "textdir":
      tfds_source.check_features(c, tfds_source.builder(c), (c.input_key,), text=True)
  check(cfg)
  spec = jax.ShapeDtypeStruct((1, cfg.seq_len), np.int32)
  if cfg.packing:
    spec = {k: spec for k in ("tokens", "segment_ids", "positions")}
  return spec, tokenizer.vocab_size(cfg.tokenizer)


@dataclasses.dataclass(frozen=True)
class _Corpus:
  home: str  # where its stores and a tokenizer trained on it live
  train: corpus.Split
  eval: corpus.Split


def _open(c: ml_collections.ConfigDict) -> _Corpus:
  """A corpus's splits (files listed and keyed, or TFDS splits opened; no text tokenized)."""
  if c.name == "textdir":
    td = corpus.text_dir(c.text_dir, c.text_field)
    for key in ("train_split", "eval_split"):
      if c[key] not in dict(corpus.SPLITS):
        raise ConfigError(f"data.{key}='{c[key]}': textdir's splits are "
                          f"{', '.join(dict(corpus.SPLITS))}")
    return _Corpus(storage.join(data_root(c), "textdir", td.name), td.split(c.train_split),
                   td.split(c.eval_split))
  b = tfds_source.builder(c)
  tfds_source.check_features(c, b, (c.input_key,), text=True)
  train, eval_ = tfds_source.open_splits(c, b)
  def split(records: Any, name: str) -> corpus.Split:
    return corpus.tfds_split(f"{c.name} {name}", records, c.input_key,
                             f"{b.info.full_name}:{name}:{len(records)}")
  return _Corpus(b.data_dir, split(train, c.train_split), split(eval_, c.eval_split))


def data_root(c: ml_collections.ConfigDict) -> str:
  """data.data_dir, else TFDS's ($TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  root = c.data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return storage.absolute(root if storage.is_remote(root) else os.path.expanduser(root))


def _tokenizer_path(cfg: ml_collections.ConfigDict, corpora: dict[str, _Corpus]) -> str:
  """data.tokenizer's file ("" for bytes); bpe:N trained here on first use (process 0 first)."""
  if not cfg.tokenizer.startswith("bpe:"):
    if cfg.tokenizer:
      tokenizer.load_file(cfg.tokenizer)  # a bad file: the one-line error, before any work
    return cfg.tokenizer
  if len(corpora) == 1:
    home = next(iter(corpora.values())).home
  else:
    key = hashlib.sha256("\0".join(c.train.key for c in corpora.values()).encode()).hexdigest()
    home = storage.join(data_root(cfg), "mixtures", key[:12])
  path = tokenizer.stored_path(cfg.tokenizer, home)

  def train() -> None:
    if not storage.isfile(path):
      texts = (text for c in corpora.values() for part in c.train.parts
               for text in corpus.read_part(c.train, part))
      tokenizer.train_bpe(texts, tokenizer.vocab_size(cfg.tokenizer), path)

  tfds_source.process_zero_first(train, f"tokenizer {path}")
  return path


def _store_url(c: _Corpus, split: corpus.Split, tok: str) -> str:
  """The split's store: its name, content key and `tok` (the tokenizer file's digest)."""
  name = re.sub(r"[^A-Za-z0-9]+", "_", split.name.rsplit(" ", 1)[-1]).strip("_")
  return storage.join(c.home, "tokens", f"{name}_{split.key[:8]}_{tok}")


def load(cfg: ml_collections.ConfigDict) -> Sources:
  """The train and eval windows of config.data: stores prepared on first use (process 0 first;
  the others find them made, or on disks of their own make their own)."""
  configs = corpus_configs(cfg)
  corpora = {name: _open(c) for name, (_, c) in configs.items()}
  path = _tokenizer_path(cfg, corpora)
  vocab = tokenizer.vocab_size(cfg.tokenizer)
  tok = hashlib.sha256(storage.read_bytes(path)).hexdigest()[:12] if path else "bytes"
  stores = {name: (_store_url(c, c.train, tok), _store_url(c, c.eval, tok))
            for name, c in corpora.items()}

  def prepare() -> None:
    for name, c in corpora.items():
      for split, url in zip((c.train, c.eval), stores[name]):
        prepare_store.ensure(url, split, path, vocab, cfg.workers)

  tfds_source.process_zero_first(prepare, f"token stores of {cfg.name}")
  windows = {name: tuple(TokenWindows(TokenStore(url), cfg.seq_len, cfg.packing) for url in urls)
             for name, urls in stores.items()}
  for name, (train, eval_) in windows.items():
    for what, w, url in (("training", train, stores[name][0]), ("eval", eval_, stores[name][1])):
      if not len(w):
        raise ConfigError(f"the {what} split of {name or cfg.name} has {len(w.store)} tokens, "
                          f"fewer than one window of data.seq_len={cfg.seq_len} + 1 ({url})")
  if not cfg.corpora:
    train, eval_ = windows[""]
    return Sources(train=train, eval=eval_, num_outputs=vocab, tokenizer_path=path)
  names = list(windows)
  return Sources(train=Corpora([windows[n][0] for n in names], names,
                               [configs[n][0] for n in names]),
                 eval={n: windows[n][1] for n in names}, num_outputs=vocab, tokenizer_path=path)


class Corpora(mixture.Mixture):
  """A mixture of corpora's training windows: rows interleaved by weight (mixture.Interleaved),
  each with "source" (the corpus's index)."""

  def __init__(self, parts: list[TokenWindows], names: list[str], weights: list[float]):
    super().__init__(parts, names, mixture.normalized(weights))
    self.fractions = mixture.chain_fractions(self.weights)

  def sampler(self, global_batch: int, seed: int) -> mixture.Interleaved:
    return mixture.Interleaved(self, global_batch, seed)

  def gather(self, indices: np.ndarray, rngs: Any = None) -> dict[str, Any]:
    batch = super().gather(indices, rngs)
    batch["source"] = self.part_of(np.asarray(indices)).astype(np.int32)
    return batch

  def epochs(self, rows: int) -> dict[str, float]:
    """Each corpus's epochs after `rows` training rows: train/epochs/NAME."""
    return {f"train/epochs/{n}": c / len(p) for n, c, p in
            zip(self.names, mixture.counts(self.fractions, rows), self.parts)}

  def describe(self, rows: int) -> str:
    """The console's line on the mixture over a run of `rows` training rows."""
    parts = []
    for (name, epochs), w, p in zip(self.epochs(rows).items(), self.weights, self.parts):
      name = name.rsplit("/", 1)[-1]
      note = f", repeats: {epochs:.1f} epochs" if epochs > 1 else f", {epochs:.2f} epochs"
      parts.append(f"{name} {w:.1%} ({len(p):,} windows{note})")
    return "Mixture of corpora over the run: " + "; ".join(parts)

