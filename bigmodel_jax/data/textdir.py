"""TFDS builder for `textdir`: the user's own text, a directory of .txt and .jsonl files.

Each .txt file is one document; each line of a .jsonl file is one, its text in the field
data.text_field. Files (found recursively, sorted) are split by a hash of their relative path:
about 90% train, 5% validation, 5% test; with few files, validation still gets one (the train
file of the highest hash) and test may be empty. One record per document: its path ("a.txt",
"b.jsonl:7") and its text. The builder config is named after the directory and a sha256 of its
contents, so edited files make a new data set rather than reuse a stale one; the metadata holds
the directory, the hash and each split's files and bytes.

  python -m bigmodel_jax.main --config=configs/text.py:gpt2_tiny --config.data.text_dir=DIR ...
"""

import dataclasses
import hashlib
import json
import logging
import os
import re
import sys

import tensorflow_datasets as tfds

from bigmodel_jax.data.offline import OfflineBuilder, generated_with, user_directory
from bigmodel_jax.faults import ConfigError

SPLITS = (("train", 90), ("validation", 95), ("test", 100))  # cumulative percent
SUFFIXES = (".txt", ".jsonl")


class _NoCustomConfigWarning(logging.Filter):
  """TFDS warns of every builder config it does not list; each text directory is one."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Using custom data configuration" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoCustomConfigWarning())


@dataclasses.dataclass(eq=False)
class TextDirConfig(tfds.core.BuilderConfig):
  directory: str = ""
  field: str = "text"
  files: tuple[str, ...] = dataclasses.field(default=(), repr=False)
  sha256: str = ""


def _bucket(path: str) -> int:
  return int(hashlib.sha256(path.encode()).hexdigest(), 16) % 100


def split_files(files: list[str]) -> dict[str, list[str]]:
  out = {name: [] for name, _ in SPLITS}
  for path in files:
    out[next(name for name, upper in SPLITS if _bucket(path) < upper)].append(path)
  if not out["validation"] and len(out["train"]) > 1:
    moved = max(out["train"], key=_bucket)
    out["train"].remove(moved)
    out["validation"].append(moved)
  return out


def documents(directory: str, path: str, field: str):
  """(record path, text) of each document of one file; ConfigError for a bad .jsonl line."""
  full = os.path.join(directory, path)
  with open(full, encoding="utf-8", errors="replace") as f:
    if path.endswith(".txt"):
      yield path, f.read()
      return
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise ConfigError(f"{full} line {n} is not JSON ({e})") from e
      if not isinstance(row, dict) or not isinstance(row.get(field), str):
        raise ConfigError(f"{full} line {n} has no text field '{field}' (data.text_field)")
      yield f"{path}:{n}", row[field]


def config_for(directory: str, field: str) -> TextDirConfig:
  """The builder config of a directory: its files checked and hashed (nothing written)."""
  directory = user_directory(directory, "textdir", "text_dir",
                             "a directory of .txt / .jsonl files")
  files = sorted(os.path.relpath(os.path.join(d, n), directory)
                 for d, _, names in os.walk(directory) for n in names if n.endswith(SUFFIXES))
  if len(files) < 2:
    raise ConfigError(f"data.text_dir {directory} has {len(files)} .txt / .jsonl files; "
                      f"it needs at least 2 (split by file into train and validation)")
  digest = hashlib.sha256(field.encode() + b"\0")
  for path in files:
    for name, text in documents(directory, path, field):  # also checks every .jsonl line
      digest.update(name.encode() + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
  slug = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(directory)).strip("_").lower() or "text"
  return TextDirConfig(name=f"{slug}_{digest.hexdigest()[:12]}", directory=directory,
                       field=field, files=tuple(files), sha256=digest.hexdigest(),
                       description=f"text files of {directory}")


class Textdir(OfflineBuilder):
  """A directory of .txt / .jsonl files, split by file."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"path": tfds.features.Text(),
                                             "text": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are on this machine
    c = self.builder_config
    print(f"Preparing data set textdir from {c.directory} in {self.data_dir} ...",
          file=sys.stderr, flush=True)
    splits = split_files(list(c.files))
    self.info.metadata.update({"directory": c.directory, "text_field": c.field,
                               "sha256": c.sha256, "generated_with": generated_with()})
    for name, paths in splits.items():
      self.info.metadata[name] = {
          "files": paths,
          "num_bytes": sum(os.path.getsize(os.path.join(c.directory, p)) for p in paths)}
    return {name: self._generate_examples(paths) for name, paths in splits.items() if paths}

  def _generate_examples(self, paths: list[str]):
    c = self.builder_config
    for path in paths:
      for name, text in documents(c.directory, path, c.field):
        yield name, {"path": name, "text": text}
