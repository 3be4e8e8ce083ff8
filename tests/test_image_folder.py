"""The user's own image folder: the image_folder data set (file bytes kept), decoding at the crop's
size, uint8 batches normalized in the step, Grain worker processes that give the same batches and
resume exactly, the throughput command, and --profile_steps with train/input_wait_fraction."""

import glob
import gzip
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from bigmodel_jax.config import default_config
from bigmodel_jax.data import image_folder, images, jpeg_folder, pipeline
from bigmodel_jax.faults import ConfigError
from helpers import REPO, run_main


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  d = tmp_path_factory.mktemp("images") / "pets"
  jpeg_folder.write_synthetic(str(d), images=45, classes=3, size=(48, 64))
  rng = np.random.default_rng(0)  # PNGs too: grayscale and RGBA become RGB
  Image.fromarray(rng.integers(0, 255, (50, 40), np.uint8)).save(d / "train/class_001/gray.png")
  Image.fromarray(rng.integers(0, 255, (30, 60, 4), np.uint8)).save(d / "val/class_002/rgba.png")
  return d


def _data(folder, tmp, **overrides):
  cfg = default_config().data
  cfg.name, cfg.path, cfg.data_dir = "image_folder", str(folder), str(tmp / "tfds")
  cfg.eval_split, cfg.image_size, cfg.augment = "val", 32, "inception_crop"
  cfg.scale, cfg.mean, cfg.std = 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  cfg.update(overrides)
  return cfg


def test_image_folder_keeps_the_files_bytes_and_crops_them(folder, tmp_path):
  sources = pipeline.load(_data(folder, tmp_path))
  assert sources.num_outputs == 3 and len(sources.train) == 40 and len(sources.eval) == 7
  assert sources.train.decodes_files
  record = sources.train.source[0]
  with open(folder / "train" / record["file_name"].decode(), "rb") as f:
    assert record["image"] == f.read()  # stored as given: not re-encoded
  labels = {sources.train.source[i]["file_name"].decode(): sources.train.source[i]["label"]
            for i in range(len(sources.train))}
  assert labels["class_001/gray.png"] == 1 and labels["class_002/00005.JPEG"] == 2  # sorted
  rngs = [np.random.default_rng(i) for i in range(4)]
  batch = pipeline.trainer_batch(sources.train, np.arange(4), rngs)
  assert batch["inputs"].shape == (4, 32, 32, 3) and batch["inputs"].dtype == np.uint8
  again = pipeline.trainer_batch(sources.train, np.arange(4), [np.random.default_rng(i) for i in range(4)])
  np.testing.assert_array_equal(batch["inputs"], again["inputs"])  # the crop is the RNG's
  evals = list(pipeline.eval_batches(sources.eval, 8))
  assert evals[0]["inputs"].dtype == np.uint8 and evals[0]["mask"].sum() == 7
  floats = sources.eval.gather(np.arange(7))["inputs"]  # gather: normalized on the host
  np.testing.assert_allclose(floats, images.Normalize.of(_data(folder, tmp_path))(
      evals[0]["inputs"][:7]), rtol=1e-6)


def test_decoding_at_reduced_size_matches_full_decoding():
  """A crop of a quarter of a large JPEG decodes at 1/2 scale (draft) and still looks the same."""
  rng = np.random.default_rng(0)
  pixels = jpeg_folder.synthetic_image(rng, 600, 800)
  import io
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, "JPEG", quality=95)
  pil, _ = images.decode_scaled(buf.getvalue(), 64, None, 0.875)
  assert pil.size == (100, 75)  # 1/8: the central 525 px still has 64 px there
  fast = images.decode_crop(buf.getvalue(), 64, None, 0.875)
  full = images.central_crop(np.asarray(Image.open(buf).convert("RGB")), 64, 0.875)
  assert fast.shape == full.shape == (64, 64, 3)
  assert np.abs(fast.astype(int) - full.astype(int)).mean() < 6  # of 255: the same picture


def test_image_folder_errors_name_the_problem(folder, tmp_path):
  with pytest.raises(ConfigError, match="data.path .* is not a directory"):
    image_folder.config_for(str(tmp_path / "missing"))
  bad = tmp_path / "bad"
  shutil.copytree(folder, bad)
  shutil.copy(folder / "train/class_000/00003.JPEG", bad / "val/stray.JPEG")
  with pytest.raises(ConfigError, match="stray.JPEG: not in a class folder"):
    image_folder.config_for(str(bad))
  os.remove(bad / "val/stray.JPEG")
  name = image_folder.config_for(str(bad)).name
  shutil.copy(folder / "train/class_000/00003.JPEG", bad / "train/class_000/new.JPEG")
  assert image_folder.config_for(str(bad)).name != name  # a changed folder: a new data set
  r = run_main("--config=configs/image_folder.py:resnet18", f"--workdir={tmp_path / 'w'}",
               "--config.data.path=")
  assert r.returncode == 2 and "data set image_folder reads data.path" in r.stderr
  assert not (tmp_path / "w").exists()


def test_a_file_that_is_not_an_image_stops_the_preparation_naming_it(folder, tmp_path):
  """Every image is decoded once when the folder is prepared: a text file named .JPEG or a
  JPEG cut short is a one-line error naming it (exit 2), for the preparing command, a run (no
  workdir written) and the throughput command alike."""
  prepared = run_main(str(folder), f"--data_dir={tmp_path / 'tfds'}",
                      module="bigmodel_jax.data.image_folder")
  assert prepared.returncode == 0, prepared.stderr
  assert "3 classes; train 40, val 7 images" in prepared.stdout
  bad = tmp_path / "bad"
  shutil.copytree(folder, bad)
  (bad / "train/class_001/broken.JPEG").write_text("not an image")
  data = (folder / "train/class_000/00003.JPEG").read_bytes()
  (bad / "val/class_000/cut.JPEG").write_bytes(data[:len(data) // 2])
  runs = {"prepare": ([str(bad), f"--data_dir={tmp_path / 'tfds'}"], "bigmodel_jax.data.image_folder"),
          "train": (["--config=configs/image_folder.py:resnet18", f"--config.data.path={bad}",
                     f"--config.data.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'w'}"],
                    "bigmodel_jax.main"),
          "throughput": (["--config=configs/image_folder.py:resnet18", f"--config.data.path={bad}",
                          f"--config.data.data_dir={tmp_path / 'tfds'}"],
                         "bigmodel_jax.data.throughput")}
  for what, (args, module) in runs.items():
    r = run_main(*args, module=module)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "Traceback" not in r.stderr, (what, r.stderr[-2000:])
    assert last == (f"error: {bad}/train/class_001/broken.JPEG is not a readable JPEG or PNG image "
                    "(no image format PIL knows): remove or replace it, then rerun"), (what, last)
  assert not (tmp_path / "w").exists()
  os.remove(bad / "train/class_001/broken.JPEG")
  r = run_main(*runs["prepare"][0], module=runs["prepare"][1])
  assert r.returncode == 2 and "val/class_000/cut.JPEG is not a readable JPEG" in r.stderr
  assert "image file is truncated" in r.stderr, r.stderr


# Grain's worker processes run in a subprocess of the test: under pytest-xdist they would inherit
# the worker's stdout, which is xdist's channel to the controller.
WORKERS_SCRIPT = """
import json, sys
import numpy as np
from bigmodel_jax.config import default_config
from bigmodel_jax.data import pipeline
cfg = default_config().data
cfg.update(json.loads(sys.argv[1]))
sources = pipeline.load(cfg)
plain = pipeline.train_iterator(sources.train, 8, seed=1, workers=0)
expected = [next(plain) for _ in range(6)]  # into the second epoch
workers = pipeline.train_iterator(sources.train, 8, seed=1, workers=2)
for want in expected[:4]:
  got = next(workers)
  assert np.array_equal(got["inputs"], want["inputs"]) and np.array_equal(got["label"], want["label"])
state = workers.get_state()
workers.close()
assert state == {"next_index": 4}, state  # the same form with and without workers
resumed = pipeline.train_iterator(sources.train, 8, seed=1, workers=0)
resumed.set_state(json.dumps(state).encode())  # as Grain's checkpoint handler passes it
for want in expected[4:]:
  assert np.array_equal(next(resumed)["inputs"], want["inputs"])
print("same batches")
"""


def test_worker_processes_give_the_same_batches_and_resume_without_them(folder, tmp_path):
  import subprocess
  import sys
  cfg = _data(folder, tmp_path).to_dict()
  r = subprocess.run([sys.executable, "-c", WORKERS_SCRIPT, json.dumps(cfg)], cwd=REPO,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 0 and "same batches" in r.stdout, r.stderr[-3000:]


def test_a_run_without_workers_resumes_with_them_bit_identically(folder, tmp_path):
  def run(workdir, workers, *extra):
    r = run_main("--config=configs/digits.py:cnn", f"--workdir={tmp_path / workdir}",
                 "--config.data.name=image_folder", f"--config.data.path={folder}",
                 f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.eval_split=val",
                 "--config.data.image_size=32", "--config.data.augment=inception_crop",
                 "--config.data.scale=0.00392156862745098", "--config.data.cache=False",
                 f"--config.data.workers={workers}", "--config.total_epochs=0.8",  # 4 steps of 8 of the 40
                 "--config.batch_size=8", "--config.eval_batch_size=8",
                 "--config.log_every=2", "--config.eval_every=4", "--config.checkpoint_every=2",
                 "--config.schedule.warmup_steps=1", *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.load(open(tmp_path / workdir / "results.json"))

  without = run("b", 0, "--profile_steps=2:3")
  rows = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
  waits = [r["train/input_wait_fraction"] for r in rows if "train/input_wait_fraction" in r]
  assert waits and all(0 <= w <= 1 for w in waits)
  trace = glob.glob(str(tmp_path / "b/profile/plugins/profile/*/perfetto_trace.json.gz"))
  events = json.load(gzip.open(trace[0]))
  events = events["traceEvents"] if isinstance(events, dict) else events
  names = {e.get("name") for e in events}
  assert "train" in names and any("train_step" in str(n) for n in names)
  # stopped after step 2 (its checkpoint kept), resumed with two worker processes
  shutil.rmtree(tmp_path / "b/checkpoints/4")
  os.remove(tmp_path / "b/results.json")
  resumed = run("b", 2)
  assert resumed["start_step"] == 2 and resumed["params_sha256"] == without["params_sha256"]


def test_throughput_command_prints_the_rate_and_stages(folder, tmp_path):
  r = run_main("--config=configs/image_folder.py:resnet18", f"--config.data.path={folder}",
               f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.batch_size=8",
               "--config.data.workers=1", "--batches=3", "--warmup=1",
               module="bigmodel_jax.data.throughput")
  assert r.returncode == 0, r.stderr
  last = json.loads(r.stdout.strip().splitlines()[-1])
  assert last["workers"] == 1 and last["examples_per_sec"] > 0 and last["batch_size"] == 8
  assert set(last["stages_ms_per_example"]) == {"read", "decode", "augment", "batch"}
  r = run_main("--config=configs/image_folder.py:resnet18", f"--config.data.path={folder}",
               "--batches=0", module="bigmodel_jax.data.throughput")
  assert r.returncode == 2 and "--batches must be positive" in r.stderr
