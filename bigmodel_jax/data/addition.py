"""TFDS builder for `addition`: sequence-to-sequence problems "a+b" -> "c" written as text.

All pairs 0 <= a, b < 1000 are permuted with numpy.random.RandomState(0); the first 20,000 are
train, the next 1,000 validation, the next 2,000 test, so held-out problems never occur in
training. Questions are at most 7 bytes ("999+999"), answers at most 4 ("1998").
"""

import sys

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data.offline import OfflineBuilder, generated_with

SPLITS = (("train", 20_000), ("validation", 1_000), ("test", 2_000))


def generate() -> dict[str, list[tuple[int, int]]]:
  order = np.random.RandomState(0).permutation(1000 * 1000)
  out, start = {}, 0
  for name, size in SPLITS:
    out[name] = [(int(i) // 1000, int(i) % 1000) for i in order[start:start + size]]
    start += size
  return out


class Addition(OfflineBuilder):
  """Addition of two numbers below 1,000, as text."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"question": tfds.features.Text(),
                                             "answer": tfds.features.Text()}),
        supervised_keys=("question", "answer"), disable_shuffling=True,
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager  # generated
    print(f"Preparing data set addition (first use) in {self.data_dir} ...", file=sys.stderr,
          flush=True)
    self.info.metadata["generated_with"] = generated_with("numpy")
    return {name: self._generate_examples(pairs) for name, pairs in generate().items()}

  def _generate_examples(self, pairs: list[tuple[int, int]]):
    for i, (a, b) in enumerate(pairs):
      yield i, {"question": f"{a}+{b}", "answer": str(a + b)}
