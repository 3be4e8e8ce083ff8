"""data.data_dir in a bucket (gs://): the data sets' home there, read from this host's copy.

TFDS prepares a data set with ArrayRecord's writer and Grain reads it with ArrayRecord's
random-access reader, and both open local files only. So for a gs:// data_dir the data set's
finished versions (directories holding dataset_info.json, which TFDS writes last) are copied to
this host's cache (storage.mirror) and TFDS opens that copy; a version the bucket lacks is
prepared in the copy and then uploaded by process 0, dataset_info.json last, for the other
hosts and the next run.
"""

import os

import jax
import ml_collections

from bigmodel_jax import storage

INFO = "dataset_info.json"


def _folder(cfg: ml_collections.ConfigDict) -> str:
  """The data set's folder under data_dir: NAME of NAME[/CONFIG][:VERSION]."""
  return cfg.name.split("/")[0].split(":")[0]


def local_data_dir(cfg: ml_collections.ConfigDict) -> str | None:
  """The data_dir TFDS opens: data.data_dir itself when local (None: TFDS's default), else this
  host's copy of the bucket's finished versions of the data set (downloaded first)."""
  if not cfg.data_dir or not storage.is_remote(cfg.data_dir):
    return cfg.data_dir or None
  storage.check_bucket(cfg.data_dir, "data.data_dir")
  storage.mirror(storage.join(cfg.data_dir, _folder(cfg)), complete_with=INFO)
  return storage.mirror_path(cfg.data_dir)


def upload_prepared(cfg: ml_collections.ConfigDict) -> None:
  """The versions prepared in this host's copy that the bucket lacks, uploaded (process 0)."""
  if not cfg.data_dir or not storage.is_remote(cfg.data_dir) or jax.process_index() != 0:
    return
  local = os.path.join(storage.mirror_path(cfg.data_dir), _folder(cfg))
  for d, _, files in os.walk(local):
    rel = os.path.relpath(d, local)
    remote = storage.join(cfg.data_dir, _folder(cfg), *([] if rel == "." else rel.split(os.sep)))
    if INFO in files and "incomplete" not in rel and not storage.exists(storage.join(remote, INFO)):
      storage.upload(d, remote, last=[INFO])
