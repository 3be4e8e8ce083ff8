"""Language-model corpora (data/corpus.py, token_store.py, prepare_store.py, lm.py, mixture.py):
every source format reads the same documents; a token store holds exactly the split's tokens,
document starts and bytes, whatever the worker count; a killed preparation is never taken as
complete and a rerun finishes it; a store another process prepares is waited for; a 0.75 / 0.25
mixture holds its shares over 1,000 batches at any batch size, each corpus in its own order; bad
corpora and weights are one line, exit 2, nothing written; two processes train from a store in
a bucket (the GCS emulator), are killed and resume to the same parameters, with no copy of the
store on their disks, and 8 devices read the same batches as 4."""

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO, run_main, run_main_batch, small_config, train_losses

from bigmodel_jax import storage
from bigmodel_jax.data import (corpus, iterator, lm, prepare_store, token_store, tokenizer,
                               training_batches)
from bigmodel_jax.data.windows import TokenWindows

DOCS = ["def add(a, b):\n    return a + b\n", "class Café:\n    prix = '3 €'\n",
        "import os\nprint(os.sep)\n", "", "for i in range(3):\n    print(i * i)\n",
        "日本語のテキスト\n" * 3]


def _write(path, docs, suffix, field="text"):
  """docs as one file of the format (.txt: one file per document, in a folder)."""
  lines = "".join(json.dumps({field: d, "n": i}) + "\n" for i, d in enumerate(docs)).encode()
  if suffix == ".jsonl":
    path.write_bytes(lines)
  elif suffix == ".jsonl.gz":
    path.write_bytes(gzip.compress(lines))
  elif suffix == ".jsonl.zst":
    import zstandard
    path.write_bytes(zstandard.ZstdCompressor().compress(lines))
  elif suffix == ".parquet":
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"n": list(range(len(docs))), field: docs}), path, row_group_size=2)


def corpus_dir(path, docs=DOCS, copies=1, files=8, suffix=".jsonl"):
  """`files` files of `suffix` holding docs (each repeated `copies` times, numbered)."""
  path.mkdir(parents=True)
  for f in range(files):
    _write(path / f"part{f:02d}{suffix}", [f"{f} {d * copies}" for d in docs], suffix)
  return path


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_format_reads_the_same_documents_in_parts(tmp_path, suffix, monkeypatch):
  monkeypatch.setattr(corpus, "PART_BYTES", 64)  # large files: several parts, same documents
  _write(tmp_path / f"a{suffix}", DOCS, suffix)
  (tmp_path / "b.txt").write_bytes("line\r\nnext\rlast é".encode())
  td = corpus.text_dir(str(tmp_path), "text")
  split = corpus.Split("all", td.key, td.root, "text", tuple(
      p for path in sorted(td.files) for p in corpus._parts(td.root, path, td.files[path][0],
                                                             "text")))
  if suffix in (".jsonl", ".parquet"):
    assert len(split.parts) > 2
  got = [d for part in split.parts for d in corpus.read_part(split, part)]
  assert got == [*DOCS, "line\nnext\nlast é"]


def _cfg(text, data, **kw):
  c = small_config("gpt2_tiny", "text").data
  c.update({"text_dir": str(text), "data_dir": str(data), "tokenizer": "", "seq_len": 16,
            "workers": 0, **kw})
  return c


def _all(windows):
  store = windows.store
  return store.read(np.array([0]), len(store))


def test_a_store_holds_the_splits_tokens_starts_and_bytes(tmp_path):
  text = corpus_dir(tmp_path / "text", copies=5)
  cfg = _cfg(text, tmp_path / "data", packing=True)
  sources = lm.load(cfg)
  train_files = corpus.split_files(sorted(os.listdir(text)))["train"]
  docs = [f"{f[4:6].lstrip('0') or '0'} {d * 5}" for f in train_files for d in DOCS]
  got = _all(sources.train)
  raw = [d.encode() for d in docs]
  np.testing.assert_array_equal(got["tokens"][0], np.frombuffer(b"".join(raw), np.uint8))
  np.testing.assert_array_equal(np.flatnonzero(got["starts"][0]),
                                np.cumsum([0] + [len(r) for r in raw[:-1]]))
  assert sources.train.store.manifest["documents"] == len(docs)
  # windows: tokens [i L, (i + 1) L + 1); packed, segments restart at each document start
  batch = sources.train.gather(np.array([0, 3]))
  flat = got["tokens"][0]
  np.testing.assert_array_equal(batch["inputs"]["tokens"][1], flat[48:64])
  np.testing.assert_array_equal(batch["label"][1], flat[49:65])
  starts = got["starts"][0][:17]
  np.testing.assert_array_equal(batch["inputs"]["segment_ids"][0], np.cumsum(starts[:16]) - 1)
  np.testing.assert_array_equal(batch["weights"][0], 1 - starts[1:17])
  # an edited file is a new store; the old one stays for the runs that read it
  (text / train_files[0]).write_text(json.dumps({"text": "changed"}) + "\n")
  assert lm.load(cfg).train.store.url != sources.train.store.url
  assert token_store.is_complete(sources.train.store.url)


def test_packed_windows_restart_positions_and_mask_the_loss_at_boundaries(tmp_path):
  records = [{"text": b"abc"}, {"text": b"defgh"}, {"text": b"ij"}]
  split = corpus.tfds_split("three", records, "text", "three docs")
  prepare_store.ensure(str(tmp_path / "s"), split, "", 256, 0)
  batch = TokenWindows(token_store.TokenStore(str(tmp_path / "s")), 4, True).gather(
      np.array([0, 1]))
  # window 0: a b c d | e ; window 1: e f g h | i
  np.testing.assert_array_equal(batch["inputs"]["segment_ids"], [[0, 0, 0, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["inputs"]["positions"], [[0, 1, 2, 0], [0, 1, 2, 3]])
  np.testing.assert_array_equal(batch["weights"], [[1, 1, 0, 1], [1, 1, 1, 0]])


def _sentencepiece(tmp_path) -> str:
  import sentencepiece
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter("".join(DOCS * 3).splitlines()), model_prefix=str(tmp_path / "sp"),
      vocab_size=320, model_type="bpe", byte_fallback=True, character_coverage=0.99,
      minloglevel=2)
  return str(tmp_path / "sp.model")


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_a_tokenizers_store_is_its_ids_and_counts_each_documents_bytes(tmp_path, kind,
                                                                     monkeypatch):
  """Worker processes (several shards) give the store one process gives, file for file."""
  monkeypatch.setattr(prepare_store, "MIN_SHARD", 200)
  text = corpus_dir(tmp_path / "text", copies=3, files=10)
  if kind == "bpe":
    path = str(tmp_path / "tok.json")
    tokenizer.train_bpe(iter(DOCS * 5), 300, path)
  else:
    path = _sentencepiece(tmp_path)
  tok = tokenizer.load_file(path)
  td = corpus.text_dir(str(text), "text")
  split = td.split("train")
  stores = []
  for workers in (0, 2):
    url = str(tmp_path / f"store{workers}")
    prepare_store.ensure(url, split, path, tok.vocab_size, workers)
    stores.append(token_store.TokenStore(url))
  assert len(stores[0].shards) > 2
  a, b = (s.read(np.array([0]), len(s)) for s in stores)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  docs = [d for part in split.parts for d in corpus.read_part(split, part)]
  encoded = tok.documents(docs)
  np.testing.assert_array_equal(a["tokens"][0], np.concatenate([i for i, _ in encoded]))
  ends = np.cumsum([len(i) for i, _ in encoded])
  per_doc = np.add.reduceat(a["bytes"][0], np.r_[0, ends[:-1]])
  np.testing.assert_array_equal(per_doc, [len(d.encode()) for d in docs])
  assert stores[0].dtype == np.uint16


def test_a_killed_preparation_is_not_complete_and_a_rerun_finishes_it(tmp_path):
  text = corpus_dir(tmp_path / "text", copies=400, files=12)
  url = str(tmp_path / "store")
  script = (f"import time\nfrom bigmodel_jax.data import corpus, prepare_store\n"
            f"prepare_store.MIN_SHARD = 20000\n"
            f"orig = prepare_store._write_shard\n"
            f"def slow(*a, **k):\n  orig(*a, **k)\n  time.sleep(0.4)\n"
            f"prepare_store._write_shard = slow\n"
            f"split = corpus.text_dir({str(text)!r}, 'text').split('train')\n"
            f"prepare_store.ensure({url!r}, split, '', 256, 0)\n")
  proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE)
  deadline = time.time() + 60
  while not os.path.exists(token_store.shard_file(url, 1, "json")):
    assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not token_store.is_complete(url)
  with pytest.raises(FileNotFoundError):
    token_store.TokenStore(url)
  plan = json.loads(open(os.path.join(url, token_store.PLAN)).read())
  assert len(plan["shards"]) > 3
  split = corpus.text_dir(str(text), "text").split("train")
  prepare_store.ensure(url, split, "", 256, 0)  # the lease's holder is dead: taken over
  fresh = str(tmp_path / "fresh")
  prepare_store.ensure(fresh, split, "", 256, 0)
  a, b = token_store.TokenStore(url), token_store.TokenStore(fresh)
  np.testing.assert_array_equal(a.read(np.array([0]), len(a))["tokens"],
                                b.read(np.array([0]), len(b))["tokens"])


def test_a_store_another_process_prepares_is_waited_for(tmp_path, monkeypatch):
  import threading
  monkeypatch.setattr(prepare_store, "POLL_S", 0.05)
  text = corpus_dir(tmp_path / "text")
  split = corpus.text_dir(str(text), "text").split("train")
  url = str(tmp_path / "store")
  os.makedirs(url)
  lease = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
  with open(os.path.join(url, token_store.LEASE), "w") as f:
    json.dump(lease, f)  # a live process (this one) holds it
  thread = threading.Thread(target=prepare_store.ensure, args=(url, split, "", 256, 0))
  thread.start()
  time.sleep(0.5)
  assert thread.is_alive() and os.listdir(url) == [token_store.LEASE]  # waits, reads nothing
  os.remove(os.path.join(url, token_store.LEASE))  # the holder gave up: this one prepares
  thread.join(30)
  assert not thread.is_alive() and token_store.is_complete(url)


def test_a_large_epoch_is_a_permutation_computed_by_position(monkeypatch):
  for n in (1, 2, 7, 1000, 4099):
    f = iterator.Feistel(n, (3, 0, 1))
    np.testing.assert_array_equal(np.sort(f[np.arange(n)]), np.arange(n))
  monkeypatch.setattr(iterator, "IN_MEMORY_ORDER", 100)  # epochs beyond: Feistel, same contract
  g = iterator.GlobalBatch(1000, 10, 0)
  seen = np.concatenate([g.map(b)[0] for b in range(100)])
  np.testing.assert_array_equal(np.sort(seen), np.arange(1000))
  np.testing.assert_array_equal(g.at(np.arange(5, 25)), seen[5:25])


def _mixture_args(code, prose, data, *extra):
  return ["--config=configs/mixture.py", "--config.data.corpora.code.name=textdir",
          f"--config.data.corpora.code.text_dir={code}",
          f"--config.data.corpora.prose.text_dir={prose}", f"--config.data.data_dir={data}",
          "--config.data.corpora.code.weight=0.75", "--config.data.corpora.prose.weight=0.25",
          "--config.model.dim=32", "--config.model.depth=1", "--config.model.mlp_dim=64",
          "--config.model.num_heads=2", "--config.data.seq_len=32", "--config.model.max_len=32",
          *extra]


def _mixture_config(code, prose, data, batch_size):
  from bigmodel_jax.config import load_config_file
  c = load_config_file(os.path.join(REPO, "configs", "mixture.py"))
  c.data.corpora.code.update({"name": "textdir", "text_dir": str(code), "weight": 0.75})
  c.data.corpora.prose.update({"text_dir": str(prose), "weight": 0.25})
  c.data.update({"data_dir": str(data), "seq_len": 8, "workers": 0})
  c.batch_size, c.total_steps = batch_size, 2000
  return c


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpora")
  return (corpus_dir(root / "code", copies=20), corpus_dir(root / "prose", DOCS[:3], files=4),
          root / "data")


@pytest.mark.parametrize("batch_size", [8, 3])
def test_a_mixture_holds_its_shares_over_1000_batches_each_corpus_in_its_own_order(
    two_corpora, batch_size):
  config = _mixture_config(*two_corpora, batch_size)
  batches = training_batches(config, start_step=500)
  source = np.stack([next(batches)["source"] for _ in range(1000)])
  assert source.shape == (1000, batch_size)
  share = (source == 0).mean()  # every row is seq_len tokens: the share of the tokens
  assert abs(share - 0.75) <= 0.005, share
  for start in range(0, 1000, 97):  # any window of batches: within 2 rows of the weights
    rows = source[start:start + 10].ravel()
    assert abs((rows == 0).sum() - 0.75 * len(rows)) <= 2
  sources = lm.load(config.data)
  mix = sources.train
  sampler = mix.sampler(batch_size, config.seed)
  enough = int(max(len(p) / w for p, w in zip(mix.parts, mix.weights)) / batch_size) + 2
  indices = np.concatenate([sampler.map(b)[0] for b in range(enough)])
  for k, part in enumerate(mix.parts):  # each corpus: whole epochs of its own windows, shuffled
    mine = indices[mix.part_of(indices) == k] - mix.offsets[k]
    epoch = mine[:len(part)]
    np.testing.assert_array_equal(np.sort(epoch), np.arange(len(part)))
    assert (epoch != np.arange(len(part))).any()
  assert set(sources.eval) == {"code", "prose"}
  line = mix.describe(1000 * batch_size)
  assert "code 75.0%" in line and "prose 25.0%" in line and "repeats" in line
  # the same batch from the start and from a later start_step
  again = next(training_batches(config, start_step=700))
  np.testing.assert_array_equal(again["source"], source[200])


def test_bad_corpora_are_one_line_exit_2_and_nothing_written(tmp_path):
  good = corpus_dir(tmp_path / "good")
  empty = tmp_path / "empty"
  empty.mkdir()
  for f in range(3):
    (empty / f"blank{f}.jsonl").write_text("\n\n")
  nocol = corpus_dir(tmp_path / "nocol", suffix=".parquet", files=3)
  truncated = {}
  for suffix in (".jsonl.gz", ".jsonl.zst"):
    d = corpus_dir(tmp_path / f"trunc{suffix.replace('.', '_')}", copies=50, files=3,
                   suffix=suffix)
    for f in d.iterdir():
      f.write_bytes(f.read_bytes()[:-20])
    truncated[suffix] = d
  base = ["--config=configs/text.py:gpt2_tiny", "--config.data.tokenizer=",
          f"--config.data.data_dir={tmp_path}/data"]
  mix = ["--config=configs/mixture.py", f"--config.data.corpora.prose.text_dir={good}",
         f"--config.data.data_dir={tmp_path}/data"]
  cases = {
      (*base, f"--config.data.text_dir={empty}"): "no document in its files",
      (*base, f"--config.data.text_dir={nocol}", "--config.data.text_field=body"):
          "has no column 'body'",
      (*base, f"--config.data.text_dir={truncated['.jsonl.gz']}"): "is it truncated?",
      (*base, f"--config.data.text_dir={truncated['.jsonl.zst']}"): "is it truncated?",
      (*mix, "--config.data.corpora.code.weight=-1"): "data.corpora.code.weight must be",
      (*mix, "--config.data.corpora.code.weight=0", "--config.data.corpora.prose.weight=0"):
          "every weight is 0",
      (*mix, "--config.data.corpora.code.weight=nan"): "data.corpora.code.weight must be",
      (*mix, "--config.data.corpora.code.name=textdir",
       f"--config.data.corpora.code.text_dir={good}"): "are the same corpus",
  }
  runs = [[*flags, f"--workdir={tmp_path}/w{i}"] for i, flags in enumerate(cases)]
  for i, (message, (status, _, stderr)) in enumerate(zip(cases.values(), run_main_batch(runs))):
    assert status == 2 and message in stderr, (message, stderr)
    assert stderr.strip().count("\n") == 0 or "Tokenizing" in stderr, stderr
    assert not (tmp_path / f"w{i}").exists()
  stores = [str(p) for p in (tmp_path / "data").rglob("manifest.json")]
  assert not [s for s in stores if "empty" in s or "trunc" in s or "nocol" in s], stores
  # ids beyond the model's vocabulary (bytes of 'é' and '€' into 100 embedding rows): refused
  from bigmodel_jax.faults import ConfigError
  url = str(tmp_path / "narrow")
  with pytest.raises(ConfigError, match="beyond its vocabulary of 100"):
    prepare_store.ensure(url, corpus.text_dir(str(good), "text").split("train"), "", 100, 0)
  assert not os.path.exists(url)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(args, env, kill_after_checkpoint=None):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "bigmodel_jax.main", *args, f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"], cwd=REPO, env={**os.environ, **env},
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  if kill_after_checkpoint is not None:
    kill_after_checkpoint(procs)
    for p in procs:
      p.kill()
      p.communicate()
    return None
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def test_two_processes_train_a_mixture_from_a_bucket_are_killed_and_resume_exactly(
    tmp_path, gcs, monkeypatch, two_corpora):
  """The stores in the emulator's bucket, read directly (no copy on either host's disk); two
  processes of 4 devices (8 in all) SIGKILLed after the first checkpoint and rerun end on the
  parameters of an uninterrupted run; one process of 4 devices trains on the same batches (the
  same losses to float rounding)."""
  from bigmodel_jax.runs import checkpoint
  code, prose, _ = two_corpora
  for k, v in gcs.items():
    monkeypatch.setenv(k, v)
  bucket = f"gs://bucket/{tmp_path.name}"
  local = tmp_path / "local"  # each run's own disk: temp files, caches, TFDS
  local.mkdir()
  env = {**gcs, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "TMPDIR": str(local),
         "BIGMODEL_JAX_CACHE": str(local / "cache"), "TFDS_DATA_DIR": str(local / "tfds")}
  args = _mixture_args(code, prose, f"{bucket}/data", "--config.total_steps=8",
                       "--config.batch_size=8", "--config.log_every=2",
                       "--config.checkpoint_every=4", "--config.eval_every=8",
                       "--config.schedule.warmup_steps=2", "--config.eval_batch_size=8")
  _two_processes([*args, f"--workdir={bucket}/reference"], env)

  def after_first_checkpoint(procs):
    deadline = time.time() + 240
    while not checkpoint.saved_steps(f"{bucket}/killed"):
      assert time.time() < deadline and all(p.poll() is None for p in procs)
      time.sleep(0.05)

  _two_processes([*args, f"--workdir={bucket}/killed"], env, after_first_checkpoint)
  outs = _two_processes([*args, f"--workdir={bucket}/killed"], env)
  assert "Resumed from the checkpoint" in outs[0][0]
  assert "Mixture of corpora" in outs[0][0]
  results = [json.loads(storage.read_text(f"{bucket}/{w}/results.json"))
             for w in ("reference", "killed")]
  assert results[0]["params_sha256"] == results[1]["params_sha256"]
  assert {"eval/code/bits_per_byte", "eval/prose/bits_per_byte"} <= set(results[0])
  assert not list(local.rglob("*.tokens")) and not list(local.rglob("manifest.json"))
  assert sum(n.endswith("/manifest.json") for n in storage.find(f"{bucket}/data")) == 4
  one = tmp_path / "one"
  proc = run_main(*args, f"--workdir={one}",
                  env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
  assert proc.returncode == 0, proc.stderr
  reference = [json.loads(line)["train/loss"] for line in storage.read_text(
      f"{bucket}/reference/metrics.jsonl").splitlines() if "train/loss" in line]
  np.testing.assert_allclose(train_losses(one), reference, rtol=2e-5)
  rows = [json.loads(line) for line in open(one / "metrics.jsonl")]
  assert rows[-1]["train/epochs/code"] > 0 and rows[-1]["train/epochs/prose"] > 0
