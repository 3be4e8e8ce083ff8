"""Preparing a token store (token_store.py): a split's documents (corpus.py) tokenized once.

Streaming, in bounded memory whatever the corpus's size (a batch of documents at a time, then
its tokens appended to the shard's files; the largest document is the one thing held whole).
The split's parts are grouped into shards (plan.json, written first); each shard is tokenized by
one worker process (data.workers: -1 one per core, 0 in this process) and is done when its
.json is written after its files. A progress line with tokens/s and the time left goes to
stderr. A killed preparation leaves no manifest.json, so no run reads the store: the next one
takes over its lease once it is stale (the holder's process gone, or no refresh for LEASE_S) and
continues the plan from the shards that are done. A store another process is preparing is waited
for. Bad content (a .jsonl line that is not JSON, a truncated file) is a ConfigError naming the
file; the half-made store is removed.

In a bucket a worker writes its shard's files locally and uploads them, the .json last.
"""

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from bigmodel_jax import storage
from bigmodel_jax.data import corpus, tokenizer
from bigmodel_jax.data.token_store import BYTE_TABLE, FORMAT, LEASE, MANIFEST, PLAN
from bigmodel_jax.data.token_store import is_complete, shard_file, token_dtype
from bigmodel_jax.faults import ConfigError

LEASE_S, HEARTBEAT_S, POLL_S = 60.0, 5.0, 2.0
BATCH_CHARS = 1 << 20  # documents tokenized together (one batch call)
MIN_SHARD, MAX_SHARD = 1 << 20, 256 << 20  # bytes of text per shard


def ensure(store: str, split: corpus.Split, tokenizer_path: str, vocab_size: int,
           workers: int) -> None:
  """The store complete: as it is, prepared here (continuing a plan a killed run left), or
  waited for while another process prepares it."""
  announced = False
  while not is_complete(store):
    holder = _holder(store)
    if holder is not None:
      if not announced:
        print(f"Waiting for {holder['host']} (process {holder['pid']}) to finish preparing "
              f"{store} ...", file=sys.stderr, flush=True)
        announced = True
      time.sleep(POLL_S)
      continue
    with _Lease(store):
      if not is_complete(store):
        try:
          _prepare(store, split, tokenizer_path, vocab_size, workers)
        except ConfigError:
          storage.remove(store, recursive=True)  # bad input: nothing half-made is left
          raise


# --- The lease: who prepares a store ------------------------------------------------------------


def _holder(store: str) -> dict[str, Any] | None:
  """The lease of a live process preparing the store, or None (none, or stale)."""
  try:
    lease = json.loads(storage.read_text(storage.join(store, LEASE)))
  except (FileNotFoundError, ValueError):
    return None
  if time.time() - float(lease.get("time", 0)) > LEASE_S:
    return None
  if lease.get("host") == socket.gethostname() and not _alive(int(lease.get("pid", -1))):
    return None
  return lease


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class _Lease:
  """Held while preparing: the lease file, refreshed every HEARTBEAT_S by a thread."""

  def __init__(self, store: str):
    self.path = storage.join(store, LEASE)
    self.stop = threading.Event()

  def _write(self) -> None:
    storage.write(self.path, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                         "time": time.time()}))

  def _beat(self) -> None:
    while not self.stop.wait(HEARTBEAT_S):
      with contextlib.suppress(Exception):  # a missed beat: the next one, or a takeover
        self._write()

  def __enter__(self) -> "_Lease":
    storage.makedirs(storage.parent(self.path))
    self._write()
    self.thread = threading.Thread(target=self._beat, daemon=True)
    self.thread.start()
    return self

  def __exit__(self, *exc: Any) -> None:
    self.stop.set()
    self.thread.join()
    with contextlib.suppress(Exception):
      storage.remove(self.path)


# --- Preparation ------------------------------------------------------------------------------


def _prepare(store: str, split: corpus.Split, tokenizer_path: str, vocab_size: int,
             workers: int) -> None:
  tok = tokenizer.load_file(tokenizer_path) if tokenizer_path else None
  workers = (os.cpu_count() or 1) if workers < 0 else workers
  shards = _plan(store, split, workers)
  table = getattr(tok, "byte_table", None)
  if table is not None:
    storage.write(storage.join(store, BYTE_TABLE), np.asarray(table, "<u4").tobytes())
  todo = [i for i in range(len(shards)) if not storage.isfile(shard_file(store, i, "json"))]
  total = sum(p.size for s in shards for p in s)
  print(f"Tokenizing {split.name} into {store}: {len(shards)} shards"
        + (f" ({len(shards) - len(todo)} done before)" if len(todo) < len(shards) else ""),
        file=sys.stderr, flush=True)
  progress = _Progress(total, sum(p.size for i in range(len(shards)) if i not in todo
                                  for p in shards[i]))
  job = (store, split, tokenizer_path, vocab_size)
  parallel = min(workers, len(todo)) if split.records is None else 1  # TFDS: small, in here
  if parallel <= 1:
    for i in todo:
      _write_shard(*job, i, shards[i], progress.counters)
      progress.show()
  else:
    context = multiprocessing.get_context("spawn")  # this process has JAX's threads: no fork
    with concurrent.futures.ProcessPoolExecutor(
        parallel, mp_context=context, initializer=_worker_init,
        initargs=(progress.counters,)) as pool:
      pending = {pool.submit(_write_shard, *job, i, shards[i]) for i in todo}
      try:
        while pending:
          done, pending = concurrent.futures.wait(pending, timeout=1.0)
          for future in done:
            future.result()  # a worker's error, here
          progress.show()
      except BaseException:
        for future in pending:
          future.cancel()
        raise
  counts = [json.loads(storage.read_text(shard_file(store, i, "json"))) for i in range(len(shards))]
  documents = sum(c["documents"] for c in counts)
  if not documents:
    raise ConfigError(f"{split.name}: no document in its files (empty files or blank lines "
                      "only); nothing to train on")
  manifest = {"format": FORMAT, "key": split.key, "split": split.name,
              "tokenizer": tokenizer_path, "vocab_size": vocab_size,
              "dtype": token_dtype(vocab_size).name,
              "bytes": "none" if tok is None else "table" if table is not None else "stored",
              "tokens": sum(c["tokens"] for c in counts), "documents": documents,
              "text_bytes": sum(c["text_bytes"] for c in counts), "shards": counts}
  storage.write(storage.join(store, MANIFEST), json.dumps(manifest, indent=1))
  progress.finish(manifest["tokens"])


def _plan(store: str, split: corpus.Split, workers: int) -> list[list[corpus.Part]]:
  """The shards' parts: the plan a killed preparation wrote, else a new one (consecutive parts
  up to a shard's size: about 4 shards per worker, MIN_SHARD to MAX_SHARD of text each)."""
  path = storage.join(store, PLAN)
  if storage.isfile(path):
    plan = json.loads(storage.read_text(path))
    if plan["key"] == split.key:
      return [[corpus.Part(**p) for p in shard] for shard in plan["shards"]]
  target = min(MAX_SHARD, max(MIN_SHARD, split.num_bytes // (4 * max(workers, 1))))
  shards, size = [[]], 0
  for part in split.parts:
    if shards[-1] and size + part.size > target:
      shards.append([])
      size = 0
    shards[-1].append(part)
    size += part.size
  storage.write(path, json.dumps({"key": split.key, "shards": [
      [vars(p) for p in shard] for shard in shards]}))
  return shards


_COUNTERS: Any = None  # a worker's shared progress counters (text bytes, tokens)


def _worker_init(counters: Any) -> None:
  global _COUNTERS
  _COUNTERS = counters
  os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one core per worker: the tokenizers library


def _write_shard(store: str, split: corpus.Split, tokenizer_path: str, vocab_size: int,
                 index: int, parts: list[corpus.Part], counters: Any = None) -> None:
  """One shard's files, then its .json (in a bucket: written here, then uploaded)."""
  counters = counters if counters is not None else _COUNTERS
  tok = tokenizer.load_file(tokenizer_path) if tokenizer_path else None
  stored_bytes = tok is not None and getattr(tok, "byte_table", None) is None
  dtype = token_dtype(vocab_size)
  with (tempfile.TemporaryDirectory(prefix="bigmodel-shard-") if storage.is_remote(store)
        else contextlib.nullcontext(store)) as local:
    names = {k: os.path.basename(shard_file(store, index, k))
             for k in ("tokens", "starts", "bytes", "json")}
    tmp = {k: os.path.join(local, f"{n}.tmp{os.getpid()}") for k, n in names.items()}
    counts = {"name": names["tokens"][:-len(".tokens")], "tokens": 0, "documents": 0,
              "text_bytes": 0}
    bits = _Bits()
    max_bytes = 0
    with open(tmp["tokens"], "wb") as f_tokens, open(tmp["starts"], "wb") as f_starts, \
        open(tmp["bytes"], "wb") as f_bytes:
      for texts, size in _batches(split, parts):
        ids, covered = _encode(tok, texts)
        lengths = [len(x) for x in ids]
        flat = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        if len(flat) and int(flat.max()) >= vocab_size:
          raise ConfigError(f"data.tokenizer {tokenizer_path or '(bytes)'} gives token id {int(flat.max())}, "
                            f"beyond its vocabulary of {vocab_size} (the model's embedding rows)")
        f_tokens.write(flat.astype(dtype.newbyteorder("<")).tobytes())
        starts = np.zeros(len(flat), bool)
        starts[np.cumsum([0] + lengths[:-1])[np.asarray(lengths) > 0]] = True
        f_starts.write(bits.add(starts))
        if stored_bytes:
          b = np.concatenate(covered) if covered else np.zeros(0, np.int64)
          max_bytes = max(max_bytes, int(b.max()) if len(b) else 0)
          f_bytes.write(b.astype("<u4").tobytes())
        counts["tokens"] += len(flat)
        counts["documents"] += len(texts)
        counts["text_bytes"] += sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
        if counters is not None:
          with counters.get_lock():
            counters[0] += size
            counters[1] += len(flat)
      f_starts.write(bits.flush())
    if stored_bytes:
      counts["bytes_dtype"] = _narrow(tmp["bytes"], max_bytes)
    else:
      os.remove(tmp["bytes"])
    with open(tmp["json"], "w") as f:
      json.dump(counts, f)
    for kind in ("tokens", "starts", "bytes", "json"):  # the .json last: the shard is done
      if os.path.exists(tmp[kind]):
        if storage.is_remote(store):
          storage.put_file(tmp[kind], storage.join(store, names[kind]))
        else:
          os.replace(tmp[kind], os.path.join(local, names[kind]))


def _batches(split: corpus.Split, parts: list[corpus.Part]) -> Iterator[tuple[list[str], int]]:
  """The parts' documents in batches of about BATCH_CHARS, with the file bytes each finished
  (for progress: a part's size when its last document is in the batch)."""
  texts, chars, size = [], 0, 0
  for part in parts:
    for text in corpus.read_part(split, part):
      texts.append(text)
      chars += len(text)
      if chars >= BATCH_CHARS:
        yield texts, size
        texts, chars, size = [], 0, 0
    size += part.size
  if texts or size:
    yield texts, size


def _encode(tok: Any, texts: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Token ids of each text and, for SentencePiece, the bytes each token covers."""
  if tok is None:
    return [np.frombuffer(t.encode("utf-8", "surrogatepass"), np.uint8) for t in texts], []
  if getattr(tok, "byte_table", None) is not None:
    return tok.ids(texts), []
  docs = tok.documents(texts)
  return [ids for ids, _ in docs], [b for _, b in docs]


class _Bits:
  """Booleans packed 8 to a byte (little-endian bit order), written as they come."""

  def __init__(self):
    self.rest = np.zeros(0, bool)

  def add(self, flags: np.ndarray) -> bytes:
    flags = np.concatenate([self.rest, flags])
    whole = len(flags) // 8 * 8
    self.rest = flags[whole:]
    return np.packbits(flags[:whole], bitorder="little").tobytes()

  def flush(self) -> bytes:
    out = np.packbits(self.rest, bitorder="little").tobytes() if len(self.rest) else b""
    self.rest = np.zeros(0, bool)
    return out


def _narrow(path: str, largest: int) -> str:
  """The uint32 file at path rewritten in the narrowest dtype that holds `largest`."""
  dtype = token_dtype(largest + 1)
  if dtype != np.uint32:
    src = np.memmap(path, "<u4", mode="r") if os.path.getsize(path) else np.zeros(0, "<u4")
    with open(f"{path}.narrow", "wb") as f:
      for i in range(0, len(src), 1 << 22):
        f.write(np.asarray(src[i:i + (1 << 22)]).astype(dtype.newbyteorder("<")).tobytes())
    del src
    os.replace(f"{path}.narrow", path)
  return dtype.name


class _Progress:
  """Shared counters (file bytes read, tokens) and the progress line on stderr."""

  def __init__(self, total: int, done_before: int):
    self.counters = multiprocessing.get_context("spawn").Array("q", [done_before, 0])
    self.total, self.before, self.t0 = max(total, 1), done_before, time.time()
    self.shown = self.t0  # the first line after 5 s: a small store says only "done"

  def show(self) -> None:
    now = time.time()
    if now - self.shown < 5.0:
      return
    self.shown = now
    done, tokens = self.counters[0], self.counters[1]
    rate = (done - self.before) / max(now - self.t0, 1e-9)
    left = (self.total - done) / rate if rate > 0 else float("inf")
    eta = f"{left / 60:.1f} min" if left != float("inf") else "?"
    print(f"  {done / self.total:.0%} ({done / 1e6:,.1f} / {self.total / 1e6:,.1f} MB of text), "
          f"{tokens:,} tokens, {tokens / max(now - self.t0, 1e-9):,.0f} tokens/s, ETA {eta}",
          file=sys.stderr, flush=True)

  def finish(self, tokens: int) -> None:
    seconds = time.time() - self.t0
    print(f"  done: {tokens:,} tokens in {seconds:.1f} s "
          f"({self.counters[1] / max(seconds, 1e-9):,.0f} tokens/s)", file=sys.stderr, flush=True)
