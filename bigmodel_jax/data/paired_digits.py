"""TFDS builders pairing the 8x8 digits (data/digits.py) with text, for multimodal models.

The text is word ids (data/words.py; the vocabulary in the metadata, "vocabulary", known
before the data set is prepared). Both data
sets are split by source image: train examples are made from the digits' 1,437 train images
only, test examples from the 360 test images only, so no test image is seen in training.

digit_scenes    two digits side by side (an 8 x 16 image) and a question that needs both the
                image and the text: the left digit, the right digit, their sum, the larger one,
                whether the left (or right) one is larger; two phrasings each. The answer is a
                class: "0" .. "18", "yes", "no". 20,000 train / 2,000 test scenes.
digit_captions  each digit image with a caption from each of CAPTION_TEMPLATES ("a handwritten
                seven", "the digit seven", ...): 1,437 train / 360 test images. The metadata
                holds the class names and the templates ("class_names",
                "prompt_templates": zero-shot classification's prompts).

Everything that changes the data (templates, counts, seeds) is pinned by the builder's VERSION.
"""

import sys

import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax.data import digits
from bigmodel_jax.data.offline import OfflineBuilder, generated_with
from bigmodel_jax.data.words import Words

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# question type -> (its two phrasings, answer of (left, right))
QUESTIONS = {
    "left": (("what is the left digit", "which digit is on the left"), lambda l, r: str(l)),
    "right": (("what is the right digit", "which digit is on the right"), lambda l, r: str(r)),
    "sum": (("what is the sum of the two digits", "what do the two digits add up to"),
            lambda l, r: str(l + r)),
    "larger": (("what is the larger digit", "which of the two digits is larger"),
               lambda l, r: str(max(l, r))),
    "left_larger": (("is the left digit larger than the right one",
                     "is the left one the larger digit"), lambda l, r: "yes" if l > r else "no"),
    "right_larger": (("is the right digit larger than the left one",
                      "is the right one the larger digit"), lambda l, r: "yes" if r > l else "no"),
}
ANSWERS = tuple(str(i) for i in range(19)) + ("yes", "no")
QUESTION_LEN = 12  # words + EOS, padded
SCENES = {"train": 20_000, "test": 2_000}
CAPTION_TEMPLATES = ("a handwritten {}", "the digit {}", "a picture of the number {}",
                     "a {} written by hand")
CAPTION_LEN = 8


def question_words() -> Words:
  return Words.from_texts(p for phrasings, _ in QUESTIONS.values() for p in phrasings)


def caption_words() -> Words:
  return Words.from_texts(t.format(n) for t in CAPTION_TEMPLATES for n in CLASS_NAMES)


def scenes(images: np.ndarray, labels: np.ndarray, count: int, seed: int):
  """`count` (image 8 x 16 x 1, question, answer, left index, right index) from these images."""
  rng = np.random.RandomState(seed)
  kinds = list(QUESTIONS)
  for _ in range(count):
    left, right = rng.randint(len(images), size=2)
    kind = kinds[rng.randint(len(kinds))]
    phrasings, answer = QUESTIONS[kind]
    question = phrasings[rng.randint(len(phrasings))]
    image = np.concatenate([images[left], images[right]], axis=1)
    yield image, question, answer(int(labels[left]), int(labels[right])), int(left), int(right)


class DigitScenes(OfflineBuilder):
  """Two digits side by side and a question about them; the answer is a class."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "6 question types x 2 phrasings; 20,000 / 2,000 scenes, seeds 1 / 2."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 16, 1), dtype=np.uint8),
            "question": tfds.features.Tensor(shape=(QUESTION_LEN,), dtype=np.int32),
            "answer": tfds.features.ClassLabel(names=ANSWERS),
            "source": tfds.features.Tensor(shape=(2,), dtype=np.int32),  # digits' image indices
        }),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(vocabulary=question_words().vocabulary),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # made from the digits that ship with scikit-learn
    print(f"Preparing data set digit_scenes (first use) in {self.data_dir} ...", file=sys.stderr,
          flush=True)
    d = digits.generate()
    self.info.metadata["generated_with"] = generated_with("scikit-learn", "numpy")
    return {"train": self._generate_examples(d["x"], d["y"], SCENES["train"], 1),
            "test": self._generate_examples(d["x_test"], d["y_test"], SCENES["test"], 2)}

  def _generate_examples(self, images, labels, count, seed):
    words = question_words()
    for i, (image, question, answer, left, right) in enumerate(scenes(images, labels, count, seed)):
      yield i, {"image": image, "question": words.encode(question, QUESTION_LEN),
                "answer": answer, "source": np.asarray([left, right], np.int32)}


class DigitCaptions(OfflineBuilder):
  """Each digit image with one caption per template (captions: templates x CAPTION_LEN ids)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "4 caption templates over the class names."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "captions": tfds.features.Tensor(shape=(len(CAPTION_TEMPLATES), CAPTION_LEN),
                                             dtype=np.int32),
        }),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(vocabulary=caption_words().vocabulary,
                                        class_names=list(CLASS_NAMES),
                                        prompt_templates=list(CAPTION_TEMPLATES)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    print(f"Preparing data set digit_captions (first use) in {self.data_dir} ...",
          file=sys.stderr, flush=True)
    d = digits.generate()
    self.info.metadata["generated_with"] = generated_with("scikit-learn", "numpy")
    return {"train": self._generate_examples(d["x"], d["y"]),
            "test": self._generate_examples(d["x_test"], d["y_test"])}

  def _generate_examples(self, images, labels):
    words = caption_words()
    for i, (image, label) in enumerate(zip(images, labels)):
      captions = np.stack([words.encode(t.format(CLASS_NAMES[label]), CAPTION_LEN)
                           for t in CAPTION_TEMPLATES])
      yield i, {"image": image, "label": int(label), "captions": captions}
