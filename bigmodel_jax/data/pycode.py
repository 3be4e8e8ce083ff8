"""TFDS builder for `pycode`: a byte-level corpus of the Python standard library's own source.

Every `.py` file under this interpreter's stdlib directory, except tests (folders named test,
tests or idle_test, files named test_*.py) and site-packages. Files are split by a hash of their
relative path: about 90% train, 5% validation, 5% test. One record per file: its path and its
bytes. The builder config is named after the Python version (the corpus is that version's
stdlib); the metadata holds each split's file list, a sha256 of the contents, its byte count and
its byte-unigram entropy in bits (the loss of a model that ignores context).
"""

import hashlib
import os
import sys
import sysconfig

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data.offline import OfflineBuilder, generated_with

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
SPLITS = (("train", 90), ("validation", 95), ("test", 100))  # cumulative percent


def split_of(path: str) -> str:
  bucket = int(hashlib.sha256(path.encode()).hexdigest(), 16) % 100
  return next(name for name, upper in SPLITS if bucket < upper)


def source_files(root: str | None = None) -> list[str]:
  """Relative paths of the corpus files, sorted."""
  root = root or sysconfig.get_paths()["stdlib"]
  found = []
  for directory, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
    for name in files:
      if name.endswith(".py") and not name.startswith("test_"):
        found.append(os.path.relpath(os.path.join(directory, name), root))
  return sorted(found)


def unigram_entropy_bits(data: bytes) -> float:
  counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256)
  p = counts[counts > 0] / len(data)
  return float(-(p * np.log2(p)).sum())


class Pycode(OfflineBuilder):
  """Python standard library source as bytes, split by file."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(
      name=f"python{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
      description="the standard library of this Python version")]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"path": tfds.features.Text(),
                                             "text": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the corpus is on this machine
    root = sysconfig.get_paths()["stdlib"]
    print(f"Preparing data set pycode (first use) from {root} in {self.data_dir} ...", file=sys.stderr, flush=True)
    files = {name: [] for name, _ in SPLITS}
    for path in source_files(root):
      files[split_of(path)].append(path)
    self.info.metadata["generated_with"] = generated_with()
    for name, paths in files.items():
      data = b"".join(_read(root, p) for p in paths)
      self.info.metadata[name] = {
          "files": paths, "num_bytes": len(data),
          "sha256": hashlib.sha256(b"".join(p.encode() + b"\0" + _read(root, p) for p in paths)).hexdigest(),
          "unigram_entropy_bits": unigram_entropy_bits(data),
      }
    return {name: self._generate_examples(root, paths) for name, paths in files.items()}

  def _generate_examples(self, root: str, paths: list[str]):
    for i, path in enumerate(paths):
      yield i, {"path": path, "text": _read(root, path)}


def _read(root: str, path: str) -> bytes:
  with open(os.path.join(root, path), "rb") as f:
    return f.read()

