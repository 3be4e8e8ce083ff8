"""TFDS data sets as the sources of classification, seq2seq, paired and TFDS text data: the
builder of config.data (checked, nothing prepared), its splits opened with tfds.data_source
(prepared on first use, one process at a time), and the rule that process 0 goes first.

In a bucket (a gs:// data.data_dir) TFDS opens this host's copy (bucket.py).
"""

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import ml_collections
import tensorflow_datasets as tfds

from bigmodel_jax import faults
from bigmodel_jax.data import (addition, digits, image_folder, mnist1d, paired_digits,  # noqa: F401
                               pycode)  # (registers the offline builders)
from bigmodel_jax.data import bucket
from bigmodel_jax.faults import ConfigError

tfds.disable_progress_bar()  # builders announce their preparation themselves

T = TypeVar("T")


def builder(cfg: ml_collections.ConfigDict) -> Any:
  """The TFDS builder of config.data (nothing read or prepared)."""
  try:
    return tfds.builder(cfg.name, data_dir=bucket.local_data_dir(cfg), **builder_kwargs(cfg))
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ConfigError(f"unknown data set '{cfg.name}': {str(e).splitlines()[0]}") from e
  except ConfigError:
    raise
  except Exception as e:  # noqa: BLE001 (a malformed name, an unknown version or builder config)
    raise ConfigError(f"data set '{cfg.name}' cannot be opened: {type(e).__name__}: "
                      f"{faults.first_line(e)}") from e


def builder_kwargs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The builder config of a user's files: image_folder's data.path (checked and hashed)."""
  if cfg.name.split(":")[0].split("/")[0] == "image_folder":
    return {"config": image_folder.config_for(cfg.path)}
  return {}


def check_features(cfg: ml_collections.ConfigDict, b: Any, keys: tuple[str, ...],
                   text: bool = False) -> None:
  """The data set has the features `keys` (text ones, for text kinds)."""
  features = b.info.features
  for key in keys:
    if key not in features:
      raise ConfigError(f"data set '{cfg.name}' has no feature '{key}'; features: "
                        f"{', '.join(features)} (set data.input_key / data.label_key)")
    if text and not isinstance(features[key], tfds.features.Text):
      raise ConfigError(f"data.kind={cfg.kind} reads text, but feature '{key}' of data set "
                        f"'{cfg.name}' is {type(features[key]).__name__}")


def open_splits(cfg: ml_collections.ConfigDict, b: Any,
                decoders: dict[str, Any] | None = None) -> tuple[Any, Any]:
  """The train and eval splits' data sources; prepares an offline data set on first use (process
  0 first, while the others wait; one process of this machine at a time)."""
  kwargs: dict[str, Any] = {"builder_kwargs": {"file_format": "array_record",
                                               **builder_kwargs(cfg)}, **(decoders or {})}

  def sources() -> tuple[Any, Any]:
    kwargs["data_dir"] = bucket.local_data_dir(cfg)  # in a bucket: this host's copy, now
    try:
      with _preparation_lock(cfg):
        try:
          splits = _open(cfg, kwargs)
        except ModuleNotFoundError:
          if "decoders" not in kwargs:
            raise
          # tfds.testing.mock_data skips decoding only with TensorFlow: decoded arrays instead
          del kwargs["decoders"]
          splits = _open(cfg, kwargs)
        bucket.upload_prepared(cfg)  # a version prepared here, for the other hosts
      return splits
    except ConfigError:
      raise
    except Exception as e:  # missing or damaged files, no download possible, unknown split, ...
      raise ConfigError(f"data set '{cfg.name}' could not be loaded: "
                        f"{type(e).__name__}: {faults.first_line(e)}") from e

  del b  # opened again by tfds.data_source, with the split
  return process_zero_first(sources, f"data set {cfg.name} prepared")


def _open(cfg: ml_collections.ConfigDict, kwargs: dict[str, Any]) -> tuple[Any, Any]:
  splits = (tfds.data_source(cfg.name, split=cfg.train_split, **kwargs),
            tfds.data_source(cfg.name, split=cfg.eval_split, **kwargs))
  for split in splits:  # read a record of each: damaged files fail here, not mid-run
    split[len(split) - 1]
  return splits


def process_zero_first(fn: Callable[[], T], name: str) -> T:
  """fn() in process 0, then (after a barrier) in the others: what process 0 prepares on a
  shared disk or bucket the others find made; on disks of their own they make their own."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils
  if jax.process_index() == 0:
    out = fn()
  multihost_utils.sync_global_devices(name)
  if jax.process_index() != 0:
    out = fn()
  return out


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
