"""TFDS builder for MNIST-1D (Greydanus & Kozlowski, 2020), generated offline.

`mnist1d.data.make_dataset(get_dataset_args())` reproduces the published reference file
(mnist1d_data.pkl): 4,000 train / 1,000 test sequences of length 40, 10 classes. Records keep
the reference order (shuffling disabled). The generation is float64 numpy/scipy arithmetic, whose
last bits depend on the CPU's SIMD kernels (an AVX-512 machine and an AVX2 one differ by up to
9e-16; the float32 records agree): tests/test_data.py pins the labels exactly and the values to
1e-9, and the metadata records the versions and machine that generated them.
"""

import sys

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data.offline import OfflineBuilder, generated_with

_CITATION = """@article{greydanus2020scaling,
  title={Scaling down Deep Learning with MNIST-1D},
  author={Greydanus, Sam and Kobak, Dmitry},
  journal={arXiv preprint arXiv:2011.14439}, year={2020}}"""


def generate(seed: int = 42) -> dict[str, np.ndarray]:
  """The reference arrays (float64 x, int64 y) as the mnist1d package makes them (seed 42: the
  published data set)."""
  from mnist1d.data import get_dataset_args, make_dataset

  args = get_dataset_args()
  args.seed = seed
  saved = np.random.get_state()  # make_dataset seeds numpy's global generator
  try:
    data = make_dataset(args)
  finally:
    np.random.set_state(saved)
  return {k: data[k] for k in ("x", "y", "x_test", "y_test")}


class Mnist1d(OfflineBuilder):
  """MNIST-1D: 10-class classification of 1-D signals of length 40."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Generated with mnist1d 0.0.2.post1, default arguments (seed 42)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "x": tfds.features.Tensor(shape=(40,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("x", "label"),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/greydanus/mnist1d",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    print(f"Preparing data set mnist1d (first use) in {self.data_dir} ...", file=sys.stderr, flush=True)
    d = generate()
    self.info.metadata["generated_with"] = generated_with("mnist1d", "numpy", "scipy")
    return {"train": self._generate_examples(d["x"], d["y"]),
            "test": self._generate_examples(d["x_test"], d["y_test"])}

  def _generate_examples(self, x: np.ndarray, y: np.ndarray):
    for i in range(len(y)):
      yield i, {"x": x[i].astype(np.float32), "label": int(y[i])}
