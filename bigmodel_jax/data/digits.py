"""TFDS builder for the 8x8 handwritten digits that scikit-learn ships (UCI optdigits test set).

1,797 grey images with values 0..16, 10 classes. The split is fixed: the images are permuted with
`numpy.random.RandomState(0).permutation(1797)`; the first 1,437 are train, the last 360 test.
"""

import sys

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data.offline import OfflineBuilder, generated_with

NUM_TRAIN = 1437


def generate() -> dict[str, np.ndarray]:
  """uint8 images (N x 8 x 8 x 1) and int64 labels of both splits."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = digits.images.astype(np.uint8)[..., None]
  order = np.random.RandomState(0).permutation(len(images))
  train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
  return {"x": images[train], "y": digits.target[train],
          "x_test": images[test], "y_test": digits.target[test]}


class Digits(OfflineBuilder):
  """8x8 handwritten digits (values 0..16), 1,437 train / 360 test."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "scikit-learn's load_digits, split by RandomState(0)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        homepage="https://archive.ics.uci.edu/dataset/80",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with scikit-learn
    print(f"Preparing data set digits (first use) in {self.data_dir} ...", file=sys.stderr, flush=True)
    d = generate()
    self.info.metadata["generated_with"] = generated_with("scikit-learn", "numpy")
    return {"train": self._generate_examples(d["x"], d["y"]),
            "test": self._generate_examples(d["x_test"], d["y_test"])}

  def _generate_examples(self, x: np.ndarray, y: np.ndarray):
    for i in range(len(y)):
      yield i, {"image": x[i], "label": int(y[i])}
