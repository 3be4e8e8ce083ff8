"""Input pipeline: TFDS data sources read with Grain.

A split becomes an *examples* object: `len()`, `gather(indices, rngs) -> batch of arrays` and
`random` (whether training batches need per-example RNGs), optionally `in_memory` (gathering
is a cheap array index: no reader threads) and, for a mixture of tasks, `sampler`:
  Records       (records.py) TFDS records, preprocessed one by one (any size of data set;
                images.py)
  InMemory      (records.py) the same, decoded once into memory (data.cache, small data sets)
  TokenWindows  (text.py) a text split's tokens cut into fixed windows, optionally packed
                with document boundaries (data.kind="lm"; tokenizer.py: bytes or BPE)
  TextPairs     (text.py) question/answer texts as padded bytes (data.kind="seq2seq")
  Paired        an image and a text of word ids, with a class label (data.kind="paired";
                paired.py)
Classification batches are {"inputs": float32, "label": int32}; language-model batches are
{"inputs": int32 B x L, "label": int32 B x L}, the label being the next token (packed: inputs
{"tokens", "segment_ids", "positions"} and "weights"; with a tokenizer "label_bytes"); seq2seq
batches are {"inputs": {"encoder": B x S, "decoder": B x T}, "label": B x T, "weights": B x T} (bytes, with
PAD 0, BOS 1, EOS 2; the decoder reads BOS + answer, the label is answer + EOS); paired batches
are {"inputs": {"image": float32, "text": int32 B x T}, "label": int32 B}, and an eval batch of
a data set with several captions per image also has "references" B x K x T (all of them).

Training: a Grain dataset of batch numbers, each mapped to a global batch of example indices at
once (a new permutation each epoch from the seed; every process walks the same global order and
gathers only its rows of each global batch); the iterator is checkpointable. Evaluation: one
ordered pass over this process's share, padded, with a mask. Several data sets trained together
(config.tasks): data/tasks.py.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax import faults
from bigmodel_jax.data import (addition, digits, image_folder, mnist1d, paired_digits, pycode,
                               textdir)  # (registers the offline builders)
from bigmodel_jax.data import bucket, iterator, paired, records, tokenizer
from bigmodel_jax.data.iterator import Gather, GlobalBatch, trainer_batch  # noqa: F401
from bigmodel_jax.data.text import BOS, EOS, PAD, TextPairs, TokenWindows  # noqa: F401
from bigmodel_jax.faults import ConfigError

tfds.disable_progress_bar()  # builders announce their preparation themselves

@dataclasses.dataclass(frozen=True)
class Sources:
  train: Any  # examples objects (above)
  eval: Any
  num_outputs: int  # classes, or the vocabulary size of a language model


def _builder_and_outputs(cfg: ml_collections.ConfigDict,
                         builder_kwargs: dict[str, Any] | None = None) -> tuple[Any, int]:
  """The TFDS builder of config.data (nothing read or prepared) and the number of outputs."""
  if builder_kwargs is None:
    builder_kwargs = _builder_kwargs(cfg)
  try:
    builder = tfds.builder(cfg.name, data_dir=bucket.local_data_dir(cfg), **builder_kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(f"unknown data set '{cfg.name}': {str(e).splitlines()[0]}") from e
  except Exception as e:  # noqa: BLE001 (a malformed name, an unknown version or builder config)
    raise ConfigError(f"data set '{cfg.name}' cannot be opened: {type(e).__name__}: "
                      f"{faults.first_line(e)}") from e
  features = builder.info.features
  if cfg.tokenizer and cfg.kind != "lm":
    raise ConfigError(f"data.tokenizer is for data.kind=lm, not {cfg.kind}")
  if cfg.kind == "paired":
    return builder, paired.outputs(cfg, builder)
  keys = (cfg.input_key,) if cfg.kind == "lm" or not cfg.label_key else (cfg.input_key,
                                                                           cfg.label_key)
  for key in keys:
    if key not in features:
      raise ConfigError(f"data set '{cfg.name}' has no feature '{key}'; features: "
                        f"{', '.join(features)} (set data.input_key / data.label_key)")
  if cfg.kind in ("lm", "seq2seq"):
    for key in keys:
      if not isinstance(features[key], tfds.features.Text):
        raise ConfigError(f"data.kind={cfg.kind} reads text, but feature '{key}' of data set "
                          f"'{cfg.name}' is {type(features[key]).__name__}")
    return builder, tokenizer.vocab_size(cfg.tokenizer) if cfg.kind == "lm" else 256
  if cfg.kind == "classification":
    num_outputs = getattr(features[cfg.label_key], "num_classes", None) if cfg.label_key else 1
    if not num_outputs:
      raise ConfigError(f"data set '{cfg.name}': feature '{cfg.label_key}' is not a class label")
    channels = (getattr(features[cfg.input_key], "shape", None) or (None,))[-1]
    for key in ("mean", "std"):
      if channels is not None and len(cfg[key]) not in (0, 1, channels):
        raise ConfigError(f"data.{key} has {len(cfg[key])} values; inputs of data set "
                          f"'{cfg.name}' have {channels} channels (give one value or {channels})")
    return builder, num_outputs
  raise ConfigError(f"unknown data.kind '{cfg.kind}'; known: classification, lm, seq2seq, paired")


def _builder_kwargs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The builder config of a user's files: textdir's data.text_dir, image_folder's data.path
  (checked and hashed)."""
  name = cfg.name.split(":")[0].split("/")[0]
  if name == "textdir":
    return {"config": textdir.config_for(cfg.text_dir, cfg.text_field)}
  if name == "image_folder":
    return {"config": image_folder.config_for(cfg.path)}
  return {}


def _decoders(cfg: ml_collections.ConfigDict, builder: Any) -> dict[str, Any]:
  """Images to crop (data.image_size) are read encoded, and decoded at the size the crop needs
  (images.decode_crop); everything else as TFDS decodes it."""
  feature = builder.info.features[cfg.input_key] if cfg.input_key in builder.info.features else None
  if (cfg.kind == "classification" and cfg.image_size > 0  # RGB: what decode_crop gives
      and isinstance(feature, tfds.features.Image) and feature.shape[-1] == 3):
    return {"decoders": {cfg.input_key: tfds.decode.SkipDecoding()}}
  return {}


def input_spec(cfg: ml_collections.ConfigDict) -> tuple[Any, int]:
  """(inputs of one example as ShapeDtypeStructs with a batch axis of 1, number of outputs),
  from the data set's metadata alone: what --dry_run plans with, without the data."""
  builder, num_outputs = _builder_and_outputs(cfg)
  spec = lambda *shape: jax.ShapeDtypeStruct((1, *shape), np.int32)  # noqa: E731
  if cfg.kind == "lm" and cfg.packing:
    return {k: spec(cfg.seq_len) for k in ("tokens", "segment_ids", "positions")}, num_outputs
  if cfg.kind == "lm":
    return spec(cfg.seq_len), num_outputs
  if cfg.kind == "seq2seq":
    return {"encoder": spec(cfg.seq_len), "decoder": spec(cfg.target_len)}, num_outputs
  shape = tuple(builder.info.features[cfg.input_key].shape)
  if cfg.kind == "paired":
    text = builder.info.features[cfg.text_key].shape[-1]
    return {"image": jax.ShapeDtypeStruct((1, *shape), np.float32), "text": spec(text)}, num_outputs
  if cfg.image_size > 0:
    shape = (cfg.image_size, cfg.image_size, *shape[2:])
  if None in shape:
    raise ConfigError(f"data set '{cfg.name}': inputs of shape {shape} vary in size; "
                      f"set data.image_size")
  return jax.ShapeDtypeStruct((1, *shape), np.float32), num_outputs


def load(cfg: ml_collections.ConfigDict) -> Sources:
  """The train and eval examples of config.data; prepares an offline data set on first use."""
  extra = _builder_kwargs(cfg)  # textdir: its files read and hashed once
  kwargs: dict[str, Any] = {"builder_kwargs": {"file_format": "array_record", **extra}}
  builder, num_outputs = _builder_and_outputs(cfg, extra)
  kwargs.update(_decoders(cfg, builder))

  def sources() -> tuple[Any, Any]:
    kwargs["data_dir"] = bucket.local_data_dir(cfg)  # in a bucket: this host's copy, now
    try:
      with _preparation_lock(cfg):
        try:
          splits = _open_splits(cfg, kwargs)
        except ModuleNotFoundError:
          if "decoders" not in kwargs:
            raise
          # tfds.testing.mock_data skips decoding only with TensorFlow: decoded arrays instead
          del kwargs["decoders"]
          splits = _open_splits(cfg, kwargs)
        if cfg.kind == "lm" and cfg.tokenizer:  # trained on first use, beside the data set
          path = tokenizer.stored_path(cfg.tokenizer, builder.data_dir)
          if cfg.tokenizer.startswith("bpe:") and not os.path.exists(path):
            train = splits[0]
            tokenizer.train_bpe((bytes(train[i][cfg.input_key]).decode("utf-8", "replace")
                                 for i in range(len(train))), num_outputs, path)
        bucket.upload_prepared(cfg)  # a version prepared here, for the other hosts
      return splits
    except ConfigError:
      raise
    except Exception as e:  # missing or damaged files, no download possible, unknown split, ...
      raise ConfigError(f"data set '{cfg.name}' could not be loaded: "
                        f"{type(e).__name__}: {faults.first_line(e)}") from e

  if jax.process_count() == 1:
    train, eval_ = sources()
  else:  # process 0 prepares a data set on first use while the others wait (a shared disk)
    from jax.experimental import multihost_utils
    if jax.process_index() == 0:
      train, eval_ = sources()
    multihost_utils.sync_global_devices(f"data set {cfg.name} prepared")
    if jax.process_index() != 0:
      train, eval_ = sources()
  tok, path = None, ""
  if cfg.kind == "lm" and cfg.tokenizer:
    path = tokenizer.stored_path(cfg.tokenizer, builder.data_dir)
    tok = tokenizer.load_file(path)
  return Sources(train=_examples(train, cfg, tok, path), eval=_examples(eval_, cfg, tok, path),
                 num_outputs=num_outputs)


def _open_splits(cfg: ml_collections.ConfigDict, kwargs: dict[str, Any]) -> tuple[Any, Any]:
  splits = (tfds.data_source(cfg.name, split=cfg.train_split, **kwargs),
            tfds.data_source(cfg.name, split=cfg.eval_split, **kwargs))
  for split in splits:  # read a record of each: damaged files fail here, not mid-run
    split[len(split) - 1]
  return splits


@contextlib.contextmanager
def _preparation_lock(cfg: ml_collections.ConfigDict) -> Iterator[None]:
  """One process at a time opens (and on first use prepares) a data set in a data dir: runs of
  a sweep started together would otherwise prepare it at once and collide."""
  root = os.path.abspath(os.path.expanduser(cfg.data_dir or os.environ.get("TFDS_DATA_DIR") or
                                            "~/tensorflow_datasets"))
  key = hashlib.sha256(f"{root}\0{cfg.name.split('/')[0]}".encode()).hexdigest()[:16]
  locks = os.path.join(tempfile.gettempdir(), "bigmodel_jax_locks")  # this machine's processes
  try:
    os.makedirs(locks, exist_ok=True)
    lock = open(os.path.join(locks, f"{key}.lock"), "a")
  except OSError:
    yield
    return
  with lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _examples(source: Any, cfg: ml_collections.ConfigDict, tok: Any = None,
              tokenizer_path: str = "") -> Any:
  if cfg.kind == "lm":
    return TokenWindows(source, cfg, tok, tokenizer_path)
  if cfg.kind == "seq2seq":
    examples = TextPairs(source, cfg)
  elif cfg.kind == "paired":
    examples = paired.Paired(source, cfg, captions=np.ndim(source[0][cfg.text_key]) == 2)
  else:
    examples = records.Records(source, cfg)
    examples.decodes_files = isinstance(source[0][cfg.input_key], bytes)  # encoded images
  return records.InMemory(examples) if cfg.cache else examples


def train_iterator(examples: Any, global_batch: int, seed: int,
                   workers: int = 0) -> iterator.TrainIterator:
  """Endless shuffled batches; `get_state`/`set_state` checkpoint it (iterator.py).

  Every process walks the same global order (a permutation of the split per epoch, from the
  seed) and cuts the same global batches; process p reads only rows [p * b, (p + 1) * b) of
  each, b = global_batch / processes. So the data order does not depend on how many processes
  or devices run, nor on the worker processes (workers > 0: Grain's multiprocessing, -1 one
  per core where examples decode files), and a checkpoint resumes on any number of them.
  """
  count, index = jax.process_count(), jax.process_index()
  local_batch = global_batch // count
  if len(examples) < global_batch:
    raise ConfigError(f"batch_size={global_batch} is larger than the training split "
                      f"({len(examples)} examples)")
  sampler = getattr(examples, "sampler", None)  # a mixture of tasks draws its own batches
  batches = sampler(global_batch, seed) if sampler else GlobalBatch(len(examples), global_batch, seed)
  gather = Gather(examples, seed, slice(index * local_batch, (index + 1) * local_batch))
  # Reader threads pay off when gathering decodes records; for arrays in memory, handing batches
  # between threads costs more than making them (and takes CPU from the step).
  threads = 0 if getattr(examples, "in_memory", False) else 2
  workers = iterator.default_workers(examples) if workers < 0 else workers
  return iterator.TrainIterator(lambda numbers: numbers.map(batches).map(gather), workers, threads)


def eval_batches(examples: Any, global_batch: int) -> Iterator[records.Batch]:
  """One ordered pass over this process's contiguous share, with "mask" (1 real, 0 padding).

  Every process yields the same number of equally shaped batches, as the jitted step needs.
  """
  count, index = jax.process_count(), jax.process_index()
  per_process = math.ceil(len(examples) / count)
  local_batch = global_batch // count
  start, stop = index * per_process, min(len(examples), (index + 1) * per_process)
  for b in range(math.ceil(per_process / local_batch)):
    indices = np.arange(start + b * local_batch, min(stop, start + (b + 1) * local_batch))
    real = len(indices)
    batch = trainer_batch(examples, np.pad(indices, (0, local_batch - real)))  # pads: example 0
    batch["mask"] = (np.arange(local_batch) < real).astype(np.float32)
    yield batch
