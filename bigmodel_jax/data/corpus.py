"""The documents of a language model's text, split, in a fixed order, with a key of their content:
a directory of the user's files (data.name=textdir, data.text_dir, local or gs://) or a TFDS data
set's text feature (pycode, or the catalogue's).

textdir reads its files recursively, sorted by relative path, streaming:

  .txt                 one document per file
  .jsonl               one per line, its text in the field data.text_field (blank lines skipped)
  .jsonl.gz .jsonl.zst the same, compressed (gzip; Zstandard)
  .parquet             one per row, its text in the column data.text_field

Files are split by a hash of their relative path: about 90% train, 5% validation, 5% test; with
few files, validation still gets one (the train file of the highest hash) and test may be empty.
The content key is a sha256 over data.text_field and each file's path and content digest (local:
sha256 of its bytes, kept per file in this machine's cache while its size, mtime and inode stay
the same, so a start-up reads no text; a bucket: the object's own md5 or crc32c), so an edited
file makes a new key (a new token store) and old runs keep theirs.

A split is a list of Parts (a whole file, a byte range of a large .jsonl, row groups of a
.parquet) that a worker process reads on its own: `read_part(split, part)` yields its documents.
"""

import dataclasses
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
from collections.abc import Iterator
from typing import Any

from bigmodel_jax import faults, storage
from bigmodel_jax.faults import ConfigError

SPLITS = (("train", 90), ("validation", 95), ("test", 100))  # cumulative percent
SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
PART_BYTES = 64 << 20  # a .jsonl or .parquet larger than this is read as several parts


@dataclasses.dataclass(frozen=True)
class Part:
  """Documents of one file: all of it, a byte range [start, stop) of a .jsonl (the lines that
  start in it), or the row groups [start, stop) of a .parquet; for a TFDS split, records."""
  path: str  # relative to the split's root ("" for a TFDS split)
  start: int = 0
  stop: int = -1  # -1: to the end
  size: int = 0  # bytes to read (progress)


@dataclasses.dataclass(frozen=True)
class Split:
  """A split's documents: `parts` in order, read by `read_part`."""
  name: str  # for messages: "textdir ROOT train"
  key: str  # sha256 of what the split holds
  root: str  # the directory (textdir), or "" (TFDS: `records` reads them)
  field: str  # the .jsonl field / .parquet column (textdir)
  parts: tuple[Part, ...]
  records: Any = None  # a TFDS split: an indexable data source of records with `field`

  @property
  def num_bytes(self) -> int:
    return sum(p.size for p in self.parts)


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


@dataclasses.dataclass(frozen=True)
class TextDir:
  """A directory's files (relative path -> (size, content digest)), its key and its splits."""
  root: str
  field: str
  files: dict[str, tuple[int, str]]
  key: str

  @property
  def name(self) -> str:
    """The corpus's folder name: the directory's name and the key's first 12 digits."""
    base = posixpath.basename(self.root.rstrip("/")) if storage.is_remote(self.root) else (
        os.path.basename(self.root))
    slug = re.sub(r"[^A-Za-z0-9]+", "_", base).strip("_").lower() or "text"
    return f"{slug}_{self.key[:12]}"

  def split(self, name: str) -> Split:
    paths = split_files(sorted(self.files))[name]
    if not paths:
      raise ConfigError(f"data.text_dir {self.root} has no file in its {name} split (files "
                        f"are split by a hash of their path; {len(self.files)} files)")
    parts = tuple(p for path in paths for p in _parts(self.root, path, self.files[path][0],
                                                       self.field))
    key = hashlib.sha256(f"{self.key}\0{name}".encode()).hexdigest()
    return Split(f"textdir {self.root} {name}", key, self.root, self.field, parts)


def text_dir(directory: str, field: str) -> TextDir:
  """The files of data.text_dir, checked and keyed (no text read but of files new to the cache)."""
  if not directory:
    raise ConfigError("data set textdir reads data.text_dir: set it to a directory of "
                      f"{', '.join(SUFFIXES)} files")
  storage.check_bucket(directory, "data.text_dir")
  if not storage.isdir(directory):
    raise ConfigError(f"data.text_dir {directory} is not a directory")
  root = storage.absolute(directory)
  files = _remote_files(root) if storage.is_remote(root) else _local_files(root)
  if len(files) < 2:
    raise ConfigError(f"data.text_dir {directory} has {len(files)} {' / '.join(SUFFIXES)} files; "
                      f"it needs at least 2 (split by file into train and validation)")
  digest = hashlib.sha256(field.encode() + b"\0")
  for path, (size, content) in sorted(files.items()):
    digest.update(f"{path}\0{size}\0{content}\0".encode())
  return TextDir(root, field, files, digest.hexdigest())


def _local_files(root: str) -> dict[str, tuple[int, str]]:
  """Relative path -> (size, sha256) of the text files under root; digests cached by stat."""
  cache_path = os.path.join(storage.cache_dir(), "text_digests",
                            hashlib.sha256(root.encode()).hexdigest()[:24] + ".json")
  try:
    with open(cache_path) as f:
      cache = json.load(f)
  except (OSError, ValueError):
    cache = {}
  out, fresh = {}, {}
  for d, dirs, names in os.walk(root):
    dirs.sort()
    for name in sorted(names):
      if not name.endswith(SUFFIXES):
        continue
      full = os.path.join(d, name)
      rel = os.path.relpath(full, root)
      st = os.stat(full)
      stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
      known = cache.get(rel)
      if known is None or known[:3] != stamp:
        known = stamp + [_sha256_file(full)]
      fresh[rel] = known
      out[rel] = (st.st_size, known[3])
  if fresh != cache:
    try:
      storage.write(cache_path, json.dumps(fresh))
    except Exception:  # noqa: BLE001 (a cache: a read-only home only costs the next start-up)
      pass
  return out


def _sha256_file(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      h.update(chunk)
  return h.hexdigest()


def _remote_files(root: str) -> dict[str, tuple[int, str]]:
  """Relative path -> (size, the object's md5 or crc32c) under a bucket URL: one listing."""
  scheme = root.split("://")[0] + "://"
  prefix = root[len(scheme):].rstrip("/") + "/"
  out = {}
  for name, info in storage.find(root).items():
    rel = name[len(prefix):] if name.startswith(prefix) else name
    if rel.endswith(SUFFIXES):
      content = info.get("md5Hash") or info.get("crc32c") or info.get("etag") or ""
      out[rel] = (int(info["size"]), f"{content}:{info.get('generation', '')}")
  return out


def _parts(root: str, path: str, size: int, field: str) -> list[Part]:
  """A file's parts: large .jsonl files by byte ranges, .parquet by row groups."""
  if path.endswith(".jsonl") and size > PART_BYTES:
    return [Part(path, s, min(s + PART_BYTES, size), min(PART_BYTES, size - s))
            for s in range(0, size, PART_BYTES)]
  if path.endswith(".parquet"):
    return _parquet_parts(root, path, size, field)
  return [Part(path, 0, -1, size)]


def _parquet_parts(root: str, path: str, size: int, field: str) -> list[Part]:
  import pyarrow.parquet as pq

  full = storage.join(root, path)
  try:
    with storage.open_binary(full) as f:
      meta = pq.ParquetFile(f).metadata
  except Exception as e:  # noqa: BLE001 (pyarrow's errors: not a parquet file, truncated)
    raise ConfigError(f"{full} is not a readable parquet file ({faults.first_line(e)})") from e
  schema = meta.schema.to_arrow_schema()
  if field not in schema.names:
    raise ConfigError(f"{full} has no column '{field}' (data.text_field); its columns: "
                      f"{', '.join(schema.names)}")
  if str(schema.field(field).type) not in ("string", "large_string", "string_view"):
    raise ConfigError(f"{full}: column '{field}' is {schema.field(field).type}, not text")
  groups = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
  total = max(sum(groups), 1)
  parts, start, got = [], 0, 0
  for i, g in enumerate(groups):
    got += g
    if got >= PART_BYTES or i == len(groups) - 1:
      parts.append(Part(path, start, i + 1, int(size * got / total)))
      start, got = i + 1, 0
  return parts


# --- Reading a part ----------------------------------------------------------------------------


def read_part(split: Split, part: Part) -> Iterator[str]:
  """The documents of one part, in order; ConfigError naming the file for bad content."""
  if split.records is not None:
    for i in range(part.start, part.stop):
      yield bytes(split.records[i][split.field]).decode("utf-8", "replace")
    return
  full = storage.join(split.root, part.path)
  try:
    if part.path.endswith(".txt"):
      with storage.open_binary(full) as f:
        # as Python's text mode reads it: universal newlines, undecodable bytes replaced
        yield f.read().decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
    elif part.path.endswith(".parquet"):
      yield from _parquet_rows(full, part, split.field)
    else:
      yield from _jsonl(full, part, split.field)
  except ConfigError:
    raise
  except (EOFError, OSError, ValueError) as e:  # a truncated or damaged compressed file
    raise ConfigError(f"{full} cannot be read to its end ({type(e).__name__}: "
                      f"{faults.first_line(e)}); is it truncated?") from e


def _jsonl(full: str, part: Part, field: str) -> Iterator[str]:
  with storage.open_binary(full) as raw:
    f = _decompressed(full, raw)
    at = part.start
    if at > 0:  # the line that started before this part belongs to the one before
      f.seek(at - 1)
      at += len(f.readline()) - 1
    number = 0 if at == 0 else None  # line numbers: counted from the file's start only
    while part.stop < 0 or at < part.stop:
      line = f.readline()
      if not line:
        break
      start, at = at, at + len(line)
      number = None if number is None else number + 1
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise ConfigError(f"{full} line {number or _line_number(full, start)} is not JSON "
                          f"({faults.first_line(e)})") from e
      if not isinstance(row, dict) or not isinstance(row.get(field), str):
        raise ConfigError(f"{full} line {number or _line_number(full, start)} has no text "
                          f"field '{field}' (data.text_field)")
      yield row[field]


def _decompressed(full: str, raw: Any) -> Any:
  """The file's bytes as a buffered reader: gzip's and Zstandard's decompressed (both raise
  EOFError when the file ends before its compressed stream does)."""
  if full.endswith(".gz"):
    return gzip.GzipFile(fileobj=raw)
  if full.endswith(".zst"):
    return io.BufferedReader(_Zstd(raw), 1 << 20)
  return raw


class _Zstd(io.RawIOBase):
  """A Zstandard stream (one or more frames) read through; a last frame cut short is an
  EOFError (the zstandard library's stream reader stops there without a word)."""

  def __init__(self, raw: Any):
    import zstandard
    self.raw, self.dctx = raw, zstandard.ZstdDecompressor()
    self.obj, self.pending, self.started = self.dctx.decompressobj(), b"", False

  def readable(self) -> bool:
    return True

  def readinto(self, buffer: Any) -> int:
    while not self.pending:
      chunk = self.raw.read(1 << 20)
      if not chunk:
        if self.started and not self.obj.eof:
          raise EOFError("the Zstandard stream ends inside a frame")
        return 0
      self.started = True
      while chunk:
        self.pending += self.obj.decompress(chunk)
        chunk = b""
        if self.obj.eof and self.obj.unused_data:  # the next frame
          chunk, self.obj = self.obj.unused_data, self.dctx.decompressobj()
        elif self.obj.eof:
          self.obj, self.started = self.dctx.decompressobj(), False
    n = min(len(buffer), len(self.pending))
    buffer[:n], self.pending = self.pending[:n], self.pending[n:]
    return n


def _line_number(full: str, offset: int) -> int:
  """The 1-based number of the line at byte `offset` (counted for an error message only)."""
  count, done = 1, 0
  with storage.open_binary(full) as raw:
    f = _decompressed(full, raw)
    while done < offset:
      chunk = f.read(min(1 << 20, offset - done))
      if not chunk:
        break
      count += chunk.count(b"\n")
      done += len(chunk)
  return count


def _parquet_rows(full: str, part: Part, field: str) -> Iterator[str]:
  import pyarrow.parquet as pq

  with storage.open_binary(full) as f:
    pf = pq.ParquetFile(f)
    for batch in pf.iter_batches(batch_size=1024, columns=[field],
                                 row_groups=list(range(part.start, part.stop))):
      for value in batch.column(0).to_pylist():
        if value is None:
          raise ConfigError(f"{full}: a row of column '{field}' is empty (null)")
        yield value


def tfds_split(name: str, records: Any, field: str, info_key: str) -> Split:
  """A TFDS split's text feature as documents: its records in index order, one part (TFDS text
  sets are the small offline ones; `info_key`, the data set's full name, split and sizes, keys
  its content)."""
  key = hashlib.sha256(f"tfds\0{info_key}\0{field}".encode()).hexdigest()
  return Split(name, key, "", field, (Part("", 0, len(records), 0),), records)
