"""The ResNet-50 training input (JPEG decode, Inception crop to 224, flip, batch of uint8) per
worker process: bigmodel_jax's pipeline against torchvision's DataLoader and tf.data, on the
same generated JPEG folder, in one run.

  .venv/bin/python benchmarks/image_pipeline.py [--folder=/tmp/bigmodel_jpegs] [--workers=1,2]
      [--torch_python=/tmp/refenv/bin/python] [--tf_python=/tmp/tfenv/bin/python]

The folder (2,000 JPEGs around 500 x 375, quality 90, ~90 KB: bigmodel_jax.data.jpeg_folder) is
written if missing. Each rate is examples/s over --batches batches of 64 after 4 warm-up
batches (worker start-up excluded), files in the page cache. Ours: `python -m
bigmodel_jax.data.throughput` (its last JSON line), the folder prepared into array_record first
(not timed). torchvision: ImageFolder + RandomResizedCrop(224) + RandomHorizontalFlip +
PILToTensor (uint8, like ours), DataLoader(num_workers=N). tf.data: the classic ImageNet input
(decode_and_crop_jpeg with sample_distorted_bounding_box: crop before decode; resize 224
bilinear; flip; uint8), map(num_parallel_calls=N) on a private pool of N threads. torch and TF
are not dependencies: give a Python that has them, or they are skipped.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TORCH = r"""
import sys, time, torch, torchvision.transforms as T
from torchvision.datasets import ImageFolder
folder, workers, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()])
loader = torch.utils.data.DataLoader(ImageFolder(folder + "/train", tf), batch_size=64,
                                     shuffle=True, num_workers=workers, drop_last=True,
                                     persistent_workers=True, prefetch_factor=2)
def endless():
  while True:
    yield from loader
it = endless()
for _ in range(4): next(it)
t = time.perf_counter()
for _ in range(batches): next(it)
print(batches * 64 / (time.perf_counter() - t))
"""

TF = r"""
import sys, time, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
folder, workers, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def crop(path):
  data = tf.io.read_file(path)
  shape = tf.image.extract_jpeg_shape(data)
  begin, size, _ = tf.image.sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4]), min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3),
      area_range=(0.08, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
  y, x, _ = tf.unstack(begin); h, w, _ = tf.unstack(size)
  image = tf.image.decode_and_crop_jpeg(data, tf.stack([y, x, h, w]), channels=3)
  image = tf.image.resize(image, (224, 224), method="bilinear", antialias=True)
  return tf.cast(tf.image.random_flip_left_right(image), tf.uint8)
ds = (tf.data.Dataset.list_files(folder + "/train/*/*.JPEG", shuffle=True).repeat()
      .map(crop, num_parallel_calls=workers).batch(64).prefetch(2))
opts = tf.data.Options(); opts.threading.private_threadpool_size = workers
opts.autotune.enabled = False
it = iter(ds.with_options(opts))
for _ in range(4): next(it)
t = time.perf_counter()
for _ in range(batches): next(it)
print(batches * 64 / (time.perf_counter() - t))
"""


def ours(folder: str, workers: int, batches: int, data_dir: str) -> float:
  out = subprocess.run(
      [sys.executable, "-m", "bigmodel_jax.data.throughput",
       "--config=configs/image_folder.py:resnet50", f"--config.data.path={folder}",
       f"--config.data.data_dir={data_dir}", f"--config.data.workers={workers}",
       "--config.batch_size=64", f"--batches={batches}"],
      cwd=ROOT, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])["examples_per_sec"]


def other(python: str, code: str, folder: str, workers: int, batches: int) -> float | None:
  if not python:
    return None
  out = subprocess.run([python, "-c", code, folder, str(workers), str(batches)],
                       capture_output=True, text=True)
  if out.returncode:
    print(f"{python}: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return None
  return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "bigmodel_jpegs"))
  parser.add_argument("--workers", default="1,2")
  parser.add_argument("--batches", type=int, default=40)
  parser.add_argument("--torch_python", default="")
  parser.add_argument("--tf_python", default="")
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  if not os.path.isdir(args.folder):
    from bigmodel_jax.data import jpeg_folder
    print(f"writing 2,000 JPEGs in {args.folder} ...", file=sys.stderr)
    jpeg_folder.write_synthetic(args.folder)
  data_dir = os.path.join(args.folder + "_tfds")
  ours(args.folder, 0, 1, data_dir)  # prepares the array_record copy once (not timed)
  print("| workers | bigmodel_jax img/s (per worker) | torchvision DataLoader | tf.data |")
  print("| --- | --- | --- | --- |")
  for w in map(int, args.workers.split(",")):
    rates = [ours(args.folder, w, args.batches, data_dir),
             other(args.torch_python, TORCH, args.folder, w, args.batches),
             other(args.tf_python, TF, args.folder, w, args.batches)]
    cells = [f"{r:,.0f} ({r / w:,.0f})" if r else "not run" for r in rates]
    print(f"| {w} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  main()
