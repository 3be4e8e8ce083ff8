"""Files at local paths or gs:// URLs: every path a user passes (workdirs, sweep roots, data,
outputs) goes through here, so a run can live in a bucket (a TPU pod or a cloud cluster has no
shared disk).

One interface for both: fsspec (gcsfs under gs://; etils.epath, which Orbax uses, takes the same
gcsfs). Checkpoints are Orbax's (tensorstore writes the arrays, to gs:// as well). A file appears
whole or not at all: locally written beside its name and renamed into place; in a bucket one
object upload, which becomes visible only when complete. A directory that must appear whole
(quantize's and convert's outputs) is filled locally and uploaded with its marker file last.

Emulator mode: with STORAGE_EMULATOR_HOST=http://HOST:PORT set (the variable Google's client
libraries read) every gs:// access goes there, anonymously: TENSORSTORE_GCS_HTTP_URL is set
from it when unset (tensorstore's own variable) and gcsfs's zonal-bucket probe (gRPC, which an
emulator does not serve: 60 s per call) is left out by registering gcsfs's plain file system
for gs://. Done before each use (a test may set the variable after this module's import).
"""

import contextlib
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec

from bigmodel_jax import faults
from bigmodel_jax.faults import ConfigError


def _configure() -> str:
  """gcsfs without its cache of listings (another process's checkpoint must be seen at once:
  Orbax's list of finished steps goes through it); STORAGE_EMULATOR_HOST, with the other
  libraries pointed at it when it is set."""
  fsspec.config.conf.setdefault("gs", {})["use_listings_cache"] = False
  host = os.environ.get("STORAGE_EMULATOR_HOST", "")
  if host:
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", host)
    fsspec.config.conf.setdefault("gs", {}).setdefault("token", "anon")
    # gcsfs's plain file system, not the one that first asks for the bucket's type over gRPC
    # (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false does the same, but only before gcsfs's import)
    import gcsfs.core
    for protocol in ("gs", "gcs"):  # epath asks for either
      if fsspec.get_filesystem_class(protocol) is not gcsfs.core.GCSFileSystem:
        fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
  return host


_configure()  # before anything else (Orbax, through epath) reaches for a bucket


class _WithoutTraceback(logging.Filter):
  """gcsfs logs its last failed retry with the exception's traceback; the message alone is
  kept, before the command's own one-line error naming the URL."""

  def filter(self, record: logging.LogRecord) -> bool:
    record.exc_info, record.exc_text = None, None
    return True


logging.getLogger("gcsfs").addFilter(_WithoutTraceback())


def is_remote(path: str) -> bool:
  """A URL (gs://bucket/...) rather than a local path."""
  return "://" in str(path)


def _fs(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
  if is_remote(path):
    _configure()
  return fsspec.core.url_to_fs(str(path))


def join(base: str, *parts: str) -> str:
  if is_remote(base):
    return posixpath.join(base, *parts)
  return os.path.join(base, *parts)


def absolute(path: str) -> str:
  """A local path made absolute; a URL as it is (without a trailing slash)."""
  return str(path).rstrip("/") if is_remote(path) else os.path.abspath(path)


def parent(path: str) -> str:
  return posixpath.dirname(absolute(path)) if is_remote(path) else os.path.dirname(
      os.path.abspath(path))


def exists(path: str) -> bool:
  fs, p = _fs(path)
  return fs.exists(p)


def isdir(path: str) -> bool:
  fs, p = _fs(path)
  return fs.isdir(p)


def isfile(path: str) -> bool:
  fs, p = _fs(path)
  return fs.isfile(p)


def listdir(path: str) -> list[str]:
  """The names in a directory ([] if there is none)."""
  if not is_remote(path):
    return os.listdir(path) if os.path.isdir(path) else []
  fs, p = _fs(path)
  try:
    return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False, refresh=True)
                  if e.rstrip("/") != p.rstrip("/"))
  except FileNotFoundError:
    return []


def makedirs(path: str) -> None:
  """A local directory and its parents; nothing for a URL (a bucket has no directories)."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def read_bytes(path: str) -> bytes:
  fs, p = _fs(path)
  with fs.open(p, "rb") as f:
    return f.read()


def open_binary(path: str) -> Any:
  """A file opened for reading bytes, streaming (a bucket's object read by ranges as it goes)."""
  if not is_remote(path):
    return open(path, "rb")
  fs, p = _fs(path)
  return fs.open(p, "rb", block_size=8 << 20)


def read_ranges(paths: list[str], starts: list[int], ends: list[int]) -> list[bytes]:
  """Bytes [start, end) of each file: local reads, or one concurrent batch of range requests to
  a bucket (gcsfs's cat_ranges): what a batch of token windows needs, never the whole file."""
  if not paths:
    return []
  if not is_remote(paths[0]):
    out = []
    for path, start, end in zip(paths, starts, ends):
      with open(path, "rb") as f:
        f.seek(start)
        out.append(f.read(end - start))
    return out
  fs, _ = _fs(paths[0])
  return fs.cat_ranges([_fs(p)[1] for p in paths], list(starts), list(ends))


def find(root: str) -> dict[str, dict[str, Any]]:
  """Every file under root (recursively) -> its details (size; in a bucket the object's md5Hash,
  crc32c, generation): one listing, no file read."""
  fs, p = _fs(root)
  return {name: info for name, info in fs.find(p, detail=True).items() if info["type"] == "file"}


def read_text(path: str) -> str:
  return read_bytes(path).decode("utf-8")


def write(path: str, data: str | bytes) -> None:
  """The whole file at once: a reader sees the old file or the new one, never half of one."""
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(path):
    fs, p = _fs(path)
    try:
      fs.pipe_file(p, data)  # one object upload: visible only when complete
    except Exception as e:  # noqa: BLE001 (after gcsfs's retries: the bucket is unreachable)
      raise faults.write_error(f"could not write {path}", e) from e
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def remove(path: str, recursive: bool = False) -> None:
  """A file (or a directory with recursive); nothing if it is not there."""
  fs, p = _fs(path)
  if fs.exists(p):
    fs.rm(p, recursive=recursive)


def move(src: str, dst: str) -> None:
  """A rename locally; in a bucket each object copied, then the originals removed."""
  if not is_remote(src):
    os.replace(src, dst)
    return
  fs, p = _fs(src)
  fs.mv(p, _fs(dst)[1], recursive=True)


def size(path: str) -> int:
  """Bytes of a file or of everything under a directory."""
  fs, p = _fs(path)
  return int(fs.du(p, total=True)) if fs.isdir(p) else int(fs.size(p))


def glob(pattern: str) -> list[str]:
  fs, p = _fs(pattern)
  found = fs.glob(p)
  return [f"gs://{f}" if is_remote(pattern) else f for f in found]


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
  """A local path holding `path` (a file or a directory): itself when local, else a temporary
  download, removed afterwards (for libraries that read local files only)."""
  if not is_remote(path):
    yield path
    return
  fs, p = _fs(path)
  if not fs.exists(p):
    raise ConfigError(f"{path} does not exist")
  with tempfile.TemporaryDirectory(prefix="bigmodel-") as tmp:
    local = os.path.join(tmp, posixpath.basename(p.rstrip("/")))
    fs.get(p, local, recursive=fs.isdir(p))
    yield local


def upload(local_dir: str, url: str, last: Iterable[str] = ()) -> None:
  """Every file under local_dir to the same names under url; the names in `last` (relative)
  after all others, so a reader that looks for them finds the rest complete."""
  fs, p = _fs(url)
  later = set(last)
  files = []
  for d, _, names in os.walk(local_dir):
    files += [os.path.relpath(os.path.join(d, n), local_dir) for n in names]
  for rel in sorted(files, key=lambda r: r in later):
    fs.put_file(os.path.join(local_dir, rel), posixpath.join(p, rel.replace(os.sep, "/")))


def put_file(local: str, url: str) -> None:
  """One local file uploaded whole to a bucket URL (visible once complete)."""
  fs, p = _fs(url)
  try:
    fs.put_file(local, p)
  except Exception as e:  # noqa: BLE001 (after gcsfs's retries: the bucket is unreachable)
    raise faults.write_error(f"could not write {url}", e) from e


def check_bucket(url: str, flag: str) -> None:
  """A gs:// URL's bucket exists and can be read with the credentials at hand: else the one-line
  ConfigError naming the URL and the fix (nothing written). Local paths: nothing to check."""
  if not is_remote(url):
    return
  if not url.startswith("gs://"):
    raise ConfigError(f"{flag} {url}: only gs:// URLs and local paths are supported")
  bucket = url[len("gs://"):].split("/")[0]
  fs, _ = _fs(url)
  try:
    fs.ls(bucket, detail=False)
  except FileNotFoundError:
    raise ConfigError(f"{flag} {url}: the bucket gs://{bucket} does not exist; create it "
                      f"(gcloud storage buckets create gs://{bucket}) or fix the name") from None
  except (PermissionError, OSError, ValueError) as e:
    how = ("STORAGE_EMULATOR_HOST is set: is the emulator running?" if _configure() else
           "give credentials that may read it (gcloud auth application-default login, or "
           "GOOGLE_APPLICATION_CREDENTIALS=KEY.json)")
    raise ConfigError(f"{flag} {url}: cannot read the bucket gs://{bucket} "
                      f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}); "
                      f"{how}") from None


@contextlib.contextmanager
def staged(url: str, last: Iterable[str] = ()) -> Iterator[str]:
  """A local directory to fill for `url`: the directory itself when local; else a temporary one
  uploaded to url (upload's `last` after the others) if the block succeeds, and removed (the
  profiler's traces, quantize's and convert's outputs: libraries that write local files)."""
  if not is_remote(url):
    os.makedirs(url, exist_ok=True)
    yield url
    return
  with tempfile.TemporaryDirectory(prefix="bigmodel-") as tmp:
    yield tmp
    upload(tmp, url, last)


def walk(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """os.walk's (directory, subdirectories, files), top down, for a URL as well; prune by
  editing the subdirectory list in place."""
  if not is_remote(root):
    yield from os.walk(root)
    return
  fs, p = _fs(root)
  scheme = root.split("://")[0] + "://"
  stack = [p.rstrip("/")]
  while stack:
    d = stack.pop()
    entries = fs.ls(d, detail=True, refresh=True)
    dirs = sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries
                  if e["type"] == "directory" and e["name"].rstrip("/") != d)
    files = sorted(posixpath.basename(e["name"]) for e in entries if e["type"] == "file")
    yield scheme + d, dirs, files
    stack += [posixpath.join(d, n) for n in reversed(dirs)]


def cache_dir() -> str:
  """This machine's cache (sample judges, copies of data in a bucket): $BIGMODEL_JAX_CACHE, else
  ~/.cache/bigmodel_jax."""
  return os.environ.get("BIGMODEL_JAX_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "bigmodel_jax"))


def mirror_path(url: str) -> str:
  """Where mirror() keeps a URL's copy: CACHE/buckets/BUCKET/PATH."""
  return os.path.join(cache_dir(), "buckets", absolute(url).split("://", 1)[1])


def mirror(url: str, complete_with: str = "") -> str:
  """A local copy of the directory at a URL (for libraries that read local files only), kept
  in mirror_path(url): files not there yet, or of another size, downloaded (each whole, by
  rename). complete_with: only the directories that hold a file of that name (one written
  last: a directory being uploaded is left out). Returns the local path."""
  fs, p = _fs(url)
  local = mirror_path(url)
  found = {name[len(p.rstrip("/")) + 1:]: info for name, info in fs.find(p, detail=True).items()}
  complete = {posixpath.dirname(rel) for rel in found
              if posixpath.basename(rel) == complete_with}
  for rel, info in found.items():
    target = os.path.join(local, *rel.split("/"))
    if not rel or (complete_with and posixpath.dirname(rel) not in complete) or (
        os.path.isfile(target) and os.path.getsize(target) == int(info["size"])):
      continue
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp{os.getpid()}"
    fs.get_file(info["name"], tmp)  # streamed to disk: data set shards can be large
    os.replace(tmp, target)
  os.makedirs(local, exist_ok=True)
  return local
