"""Offline TFDS builders, the Grain pipeline, and catalogue data sets through the same path."""

import hashlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigmodel_jax.config import ConfigError, default_config
from bigmodel_jax.data import digits, mnist1d, pipeline, pycode


def _sha(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


# Checksums of the generated arrays. They change only if the mnist1d package or numpy changes how
# the data are generated; then the data set is no longer the published MNIST-1D: investigate
# before updating them.
MNIST1D_SHA = {"x": "89a7b3e18f98b44c", "y": "d97dc7aecec8ad6b",
               "x_test": "66fbca3b44b0a798", "y_test": "8de99be3ff9dab15"}
# The documented digits split (RandomState(0) permutation, 1,437 / 360).
DIGITS_SHA = {"x": "8dc700dcd0f18c4f", "y": "aebea7d2bc9e1f01",
              "x_test": "3e513a101193c051", "y_test": "d6c86f9a7de5b7af"}


def test_mnist1d_generation_is_pinned():
  d = mnist1d.generate()
  assert d["x"].shape == (4000, 40) and d["x_test"].shape == (1000, 40)
  assert {k: _sha(v) for k, v in d.items()} == MNIST1D_SHA


def test_digits_split_is_pinned():
  d = digits.generate()
  assert d["x"].shape == (1437, 8, 8, 1) and d["x_test"].shape == (360, 8, 8, 1)
  assert {k: _sha(v) for k, v in d.items()} == DIGITS_SHA


@pytest.mark.parametrize("name, module, key", [("mnist1d", mnist1d, "x"), ("digits", digits, "image")])
def test_builders_are_tfds_data_sources_in_reference_order(name, module, key):
  ref = module.generate()
  for split, xs, ys in [("train", ref["x"], ref["y"]), ("test", ref["x_test"], ref["y_test"])]:
    src = tfds.data_source(name, split=split)  # exactly as for a catalogue data set
    assert type(src).__name__ == "ArrayRecordDataSource"
    records = src.__getitems__(list(range(len(src))))
    np.testing.assert_array_equal(np.stack([r[key] for r in records]), xs.astype(np.float32 if name == "mnist1d" else np.uint8))
    np.testing.assert_array_equal([r["label"] for r in records], ys)


def _mnist1d_cfg():
  c = default_config().data
  c.name, c.input_key, c.cache = "mnist1d", "x", True
  return c


@pytest.fixture(scope="module")
def mnist1d_sources():
  return pipeline.load(_mnist1d_cfg())


def _labels(it, n):
  return np.concatenate([next(it)["label"] for _ in range(n)])


def test_train_iterator_shuffles_per_epoch_deterministically(mnist1d_sources):
  it = pipeline.train_iterator(mnist1d_sources.train, 100, seed=0)
  batch = next(it)
  assert batch["inputs"].shape == (100, 40) and batch["inputs"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  # Record identity through the inputs: each epoch is a permutation of all 4,000, different each time.
  it = pipeline.train_iterator(mnist1d_sources.train, 100, seed=0)
  epochs = [np.concatenate([next(it)["inputs"][:, :3] for _ in range(40)]) for _ in range(2)]
  for e in epochs:
    assert len(np.unique(e, axis=0)) == 4000
  assert not np.array_equal(epochs[0], epochs[1])
  np.testing.assert_array_equal(np.sort(epochs[0], axis=0), np.sort(epochs[1], axis=0))
  same = pipeline.train_iterator(mnist1d_sources.train, 100, seed=0)
  other = pipeline.train_iterator(mnist1d_sources.train, 100, seed=1)
  first = _labels(same, 40)
  np.testing.assert_array_equal(first, _labels(pipeline.train_iterator(mnist1d_sources.train, 100, seed=0), 40))
  assert not np.array_equal(first, _labels(other, 40))


@pytest.mark.parametrize("cache", [True, False])
def test_iterator_state_restores_the_exact_position(cache):
  cfg = _mnist1d_cfg()
  cfg.cache = cache
  examples = pipeline.load(cfg).train
  assert type(examples).__name__ == ("InMemory" if cache else "Records")
  it = pipeline.train_iterator(examples, 64, seed=3)
  for _ in range(70):  # past the first epoch
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  fresh = pipeline.train_iterator(examples, 64, seed=3)
  fresh.set_state(state)
  for e in expected:
    got = next(fresh)
    np.testing.assert_array_equal(got["inputs"], e["inputs"])
    np.testing.assert_array_equal(got["label"], e["label"])


def test_processes_read_disjoint_shards(mnist1d_sources, monkeypatch):
  seen = []
  for p in range(3):
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(jax, "process_index", lambda p=p: p)
    it = pipeline.train_iterator(mnist1d_sources.train, 99, seed=0)
    rows = np.concatenate([next(it)["inputs"] for _ in range(40)])  # 40 x 33 = 1,320 < 1,333
    assert rows.shape == (1320, 40)
    seen.append({r.tobytes() for r in rows})
  assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_eval_batches_cover_the_split_once_with_padding(mnist1d_sources, monkeypatch):
  batches = list(pipeline.eval_batches(mnist1d_sources.eval, 384))
  assert [b["inputs"].shape for b in batches] == [(384, 40)] * 3
  assert sum(b["mask"].sum() for b in batches) == 1000
  labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
  np.testing.assert_array_equal(labels, mnist1d.generate()["y_test"])
  counts = []
  for p in range(3):  # every process yields the same number of batches
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(jax, "process_index", lambda p=p: p)
    bs = list(pipeline.eval_batches(mnist1d_sources.eval, 300))
    counts.append((len(bs), sum(b["mask"].sum() for b in bs)))
  assert [c[0] for c in counts] == [4, 4, 4] and sum(c[1] for c in counts) == 1000


def test_unknown_data_set_and_feature_are_config_errors():
  cfg = _mnist1d_cfg()
  cfg.name = "mnist1e"
  with pytest.raises(ConfigError, match="unknown data set 'mnist1e'"):
    pipeline.load(cfg)
  cfg.name, cfg.input_key = "mnist1d", "image"
  with pytest.raises(ConfigError, match="has no feature 'image'; features: x, label"):
    pipeline.load(cfg)


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_catalogue_data_sets_go_through_the_same_pipeline(name, shape):
  cfg = default_config().data
  cfg.name, cfg.scale = name, 1 / 255
  with tfds.testing.mock_data(num_examples=64):
    sources = pipeline.load(cfg)
    assert sources.num_outputs == 10
    batch = next(pipeline.train_iterator(sources.train, 16, seed=0))
    assert batch["inputs"].shape == (16, *shape) and batch["inputs"].max() <= 1.0
    assert sum(b["mask"].sum() for b in pipeline.eval_batches(sources.eval, 24)) == 64


def test_pycode_corpus_is_the_stdlib_without_tests_split_by_file():
  files = pycode.source_files()
  assert len(files) > 500 and "os.py" in files and "json/decoder.py" in files
  assert not any(part in ("test", "tests", "idle_test") for f in files for part in f.split("/"))
  assert not any(f.split("/")[-1].startswith("test_") for f in files)
  src = {split: tfds.data_source("pycode", split=split) for split in ("train", "validation", "test")}
  meta = tfds.builder("pycode").info.metadata
  paths = {split: [bytes(r["path"]).decode() for r in (s[i] for i in range(len(s)))]
           for split, s in src.items()}
  assert sorted(sum(paths.values(), [])) == files  # every file once, in exactly one split
  for split, names in paths.items():
    assert names == meta[split]["files"] and all(pycode.split_of(n) == split for n in names)
    assert len(meta[split]["sha256"]) == 64
  assert 0.8 < len(paths["train"]) / len(files) < 0.97
  assert 4.0 < meta["validation"]["unigram_entropy_bits"] < 5.5


def test_lm_windows_are_the_corpus_bytes_shifted_by_one():
  cfg = default_config().data
  cfg.name, cfg.kind, cfg.input_key, cfg.seq_len, cfg.eval_split = "pycode", "lm", "text", 64, "validation"
  sources = pipeline.load(cfg)
  assert sources.num_outputs == 256
  batch = next(pipeline.train_iterator(sources.train, 8, seed=0))
  assert batch["inputs"].shape == batch["label"].shape == (8, 64)
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["label"][:, :-1])
  first = sources.eval.gather(np.array([0, 1]))
  text = bytes(tfds.data_source("pycode", split="validation")[0]["text"])
  assert bytes(first["inputs"][0].astype(np.uint8)) == text[:64]
  assert bytes(first["inputs"][1].astype(np.uint8)) == text[64:128]
  assert len(sources.eval) == (tfds.builder("pycode").info.metadata["validation"]["num_bytes"] - 1) // 64
