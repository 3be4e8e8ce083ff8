"""TFDS builder for `image_folder`: the user's own images in the ImageNet / torchvision layout.

  DIR/train/CLASS/*.JPEG   DIR/val/CLASS/*.JPEG   (any split names; JPEG and PNG files)

Classes are the sorted directory names of the first split ("train" if there is one); every other
split's classes must be among them. Prepared once into array_record with each file's original
bytes (no re-encode: the pipeline decodes at reduced size where the crop allows, images.py).
The builder config is named after the directory and a sha256 of its file list and sizes, so an
edited folder makes a new data set rather than reuse a stale one.

  python -m bigmodel_jax.main --config=configs/image_folder.py:resnet50 --config.data.path=DIR ...
  python -m bigmodel_jax.data.image_folder DIR     prepares it now (what the first run does)

Every image is decoded once at preparation: a file that is not a readable JPEG or PNG stops it
with a one-line error naming the file (exit 2), before any run starts.
A folder to try it on: `python -m bigmodel_jax.data.jpeg_folder DIR` (jpeg_folder.py).
"""

import dataclasses
import hashlib
import io
import logging
import os
import re
import sys

import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from bigmodel_jax import faults
from bigmodel_jax.cli import ArgumentParser, run_script
from bigmodel_jax.data.offline import OfflineBuilder, generated_with, user_directory
from bigmodel_jax.faults import ConfigError

SUFFIXES = (".jpeg", ".jpg", ".png")


class _NoCustomConfigWarning(logging.Filter):
  """TFDS warns of every builder config it does not list; each image folder is one."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Using custom data configuration" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoCustomConfigWarning())


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  directory: str = ""
  classes: tuple[str, ...] = dataclasses.field(default=(), repr=False)
  files: dict = dataclasses.field(default_factory=dict, repr=False)  # split -> ((class, path), ...)
  sha256: str = ""


def _images(directory: str) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, n), directory) for d, _, names in os.walk(directory)
                for n in names if n.lower().endswith(SUFFIXES))


def config_for(directory: str) -> ImageFolderConfig:
  """The builder config of a folder: its layout checked and hashed (nothing read or written)."""
  directory = user_directory(directory, "image_folder", "path",
                             "a folder of SPLIT/CLASS/image files (train/, val/)")
  splits = sorted(n for n in os.listdir(directory) if os.path.isdir(os.path.join(directory, n)))
  if not splits:
    raise ConfigError(f"data.path {directory} has no split folders (train/, val/) of CLASS/image "
                      "files")
  first = "train" if "train" in splits else splits[0]
  classes = tuple(sorted(n for n in os.listdir(os.path.join(directory, first))
                         if os.path.isdir(os.path.join(directory, first, n))))
  if not classes:
    raise ConfigError(f"{os.path.join(directory, first)} has no class folders")
  digest, files = hashlib.sha256(), {}
  for split in splits:
    rows = []
    for path in _images(os.path.join(directory, split)):
      label = path.split(os.sep)[0]
      if os.sep not in path or label not in classes:
        raise ConfigError(f"{os.path.join(directory, split, path)}: not in a class folder of "
                          f"{first}/ (classes: {', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
      rows.append((label, path))
      size = os.path.getsize(os.path.join(directory, split, path))
      digest.update(f"{split}/{path}\0{size}\0".encode())
    if rows:
      files[split] = tuple(rows)
  if first not in files:
    raise ConfigError(f"{os.path.join(directory, first)} has no .jpeg / .jpg / .png files")
  slug = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(directory)).strip("_").lower() or "images"
  return ImageFolderConfig(name=f"{slug}_{digest.hexdigest()[:12]}", directory=directory,
                           classes=classes, files=files, sha256=digest.hexdigest(),
                           description=f"images of {directory}")


class ImageFolder(OfflineBuilder):
  """A folder of SPLIT/CLASS/images, each image's file bytes as stored."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),  # JPEG or PNG bytes as given
            "label": tfds.features.ClassLabel(names=list(c.classes)),
            "file_name": tfds.features.Text()}),
        supervised_keys=("image", "label"), metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are on this machine
    c = self.builder_config
    print(f"Preparing data set image_folder from {c.directory} in {self.data_dir} ...",
          file=sys.stderr, flush=True)
    self.info.metadata.update({"directory": c.directory, "sha256": c.sha256,
                               "generated_with": generated_with()})
    return {split: self._generate_examples(split, rows) for split, rows in c.files.items()}

  def _generate_examples(self, split: str, rows: tuple[tuple[str, str], ...]):
    root = os.path.join(self.builder_config.directory, split)
    for label, path in rows:
      with open(os.path.join(root, path), "rb") as f:
        data = f.read()
      check_image(os.path.join(root, path), data)
      yield path, {"image": data, "label": label, "file_name": path}


def check_image(path: str, data: bytes) -> None:
  """ConfigError naming `path` unless its bytes decode as a JPEG or PNG image: a file that is
  not one (or is cut short) stops the preparation, not a training run later. JPEGs decode at
  1/8 scale here, which still reads every byte of the file."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format not in ("JPEG", "PNG"):
        raise ValueError(f"it is a {image.format} file")
      image.draft("RGB", (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
      image.load()
  except Exception as e:  # noqa: BLE001 (whatever PIL finds wrong with it)
    why = ("no image format PIL knows" if isinstance(e, UnidentifiedImageError)
           else faults.first_line(e))
    raise ConfigError(f"{path} is not a readable JPEG or PNG image ({why}): remove or replace "
                      "it, then rerun") from e


def main(argv: list[str]) -> None:
  """Prepares (and checks every image of) a folder: what the first run on it would do."""
  parser = ArgumentParser(prog="python -m bigmodel_jax.data.image_folder",
                          description="Prepare a folder of SPLIT/CLASS/images as data set "
                                      "image_folder (array_record in the TFDS data dir).")
  parser.add_argument("directory")
  parser.add_argument("--data_dir", default="", help="default: $TFDS_DATA_DIR or "
                                                     "~/tensorflow_datasets")
  args = parser.parse_args(argv)
  tfds.disable_progress_bar()  # the builder announces its preparation itself
  builder = tfds.builder("image_folder", config=config_for(args.directory),
                         data_dir=args.data_dir or None, file_format="array_record")
  builder.download_and_prepare()
  splits = ", ".join(f"{name} {info.num_examples:,}" for name, info in builder.info.splits.items())
  print(f"image_folder/{builder.builder_config.name} in {builder.data_dir}: "
        f"{len(builder.builder_config.classes)} classes; {splits} images; train with "
        f"--config.data.name=image_folder --config.data.path={args.directory}")


if __name__ == "__main__":
  run_script(main)
