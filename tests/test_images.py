"""Image preprocessing (data/images.py) and the ImageNet / CIFAR-10 configs on mock TFDS data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigmodel_jax.config import default_config
from bigmodel_jax.data import images, pipeline
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.trainer import train
from helpers import small_config


def _image(h, w, c=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.mark.parametrize("h, w", [(300, 500), (500, 300), (224, 224), (17, 40)])
def test_crops_have_the_requested_size(h, w):
  image = _image(h, w)
  assert images.central_crop(image, 224, 0.875).shape == (224, 224, 3)
  for seed in range(5):
    crop = images.random_resized_crop(image, 64, np.random.default_rng(seed))
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8


def test_random_crop_depends_on_the_rng_seed_only():
  image = _image(120, 160)
  crop = lambda s: images.random_resized_crop(image, 32, np.random.default_rng(s))
  np.testing.assert_array_equal(crop((1, 0, 7)), crop((1, 0, 7)))
  assert not np.array_equal(crop((1, 0, 7)), crop((1, 0, 8)))


def test_central_crop_of_a_square_image_resized_to_itself_is_its_centre():
  image = _image(64, 64)
  np.testing.assert_array_equal(images.central_crop(image, 32, 0.5), image[16:48, 16:48])


def test_grayscale_images_keep_their_channel_axis():
  assert images.central_crop(_image(40, 30, 1), 16, 0.875).shape == (16, 16, 1)


def _cfg(**kw):
  cfg = default_config().data
  cfg.update(kw)
  return cfg


def test_batch_stage_normalizes_and_augments_only_in_training():
  batch = _image(8, 8).astype(np.uint8)[None].repeat(4, 0)
  pre = images.Preprocess(_cfg(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                               augment="crop_flip"))
  evaluated = pre.batch(batch, None)
  np.testing.assert_allclose(evaluated, (batch / 255 - 0.5) / 0.25, atol=1e-6)
  trained = pre.batch(batch, [np.random.default_rng(s) for s in range(4)])
  assert trained.shape == evaluated.shape and trained.dtype == np.float32
  assert not np.array_equal(trained, evaluated)  # cropped and flipped differently per example
  # crop_flip keeps every pixel a pixel of the zero-padded image: values stay in range
  assert trained.min() >= (0 - 0.5) / 0.25 and trained.max() <= (1 - 0.5) / 0.25


def test_flip_mirrors_the_width_axis():
  batch = _image(4, 6)[None]
  pre = images.Preprocess(_cfg(augment="flip"))
  flipped = [pre.batch(batch, [np.random.default_rng(s)]) for s in range(20)]
  assert any(np.array_equal(f[0], batch[0, :, ::-1]) for f in flipped)
  assert any(np.array_equal(f[0], batch[0]) for f in flipped)


@pytest.mark.parametrize("kw, message", [
    (dict(augment="mixup"), "unknown data.augment 'mixup'"),
    (dict(augment="inception_crop"), "needs data.image_size > 0"),
])
def test_bad_image_settings_are_config_errors(kw, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    images.Preprocess(_cfg(**kw))


def _imagenet_sources(size=32):
  cfg = small_config("resnet18", "imagenet2012").data
  cfg.image_size = size
  return pipeline.load(cfg)


def test_imagenet_pipeline_crops_variable_size_images_and_resumes_exactly():
  with tfds.testing.mock_data(num_examples=48, policy=tfds.testing.MockPolicy.USE_CODE):
    sources = _imagenet_sources()
    assert sources.num_outputs == 1000
    it = pipeline.train_iterator(sources.train, 8, seed=3)
    first = next(it)
    # uint8 to the step, which normalizes by ImageNet's mean and std
    assert first["inputs"].shape == (8, 32, 32, 3) and first["inputs"].dtype == np.uint8
    assert abs(sources.train.preprocess.normalize(first["inputs"]).mean()) < 3
    for _ in range(4):  # into the second epoch: the same examples come back with other crops
      next(it)
    state = it.get_state()
    ahead = [next(it) for _ in range(3)]
    resumed = pipeline.train_iterator(sources.train, 8, seed=3)
    resumed.set_state(state)
    for a, b in zip(ahead, (next(resumed) for _ in range(3))):
      np.testing.assert_array_equal(a["inputs"], b["inputs"])
      np.testing.assert_array_equal(a["label"], b["label"])
    evals = list(pipeline.eval_batches(sources.eval, 16))
    again = list(pipeline.eval_batches(sources.eval, 16))
    assert sum(b["mask"].sum() for b in evals) == 48
    np.testing.assert_array_equal(evals[0]["inputs"], again[0]["inputs"])  # eval is deterministic


def test_same_example_gets_new_crops_in_a_new_epoch():
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    sources = _imagenet_sources(16)
    it = pipeline.train_iterator(sources.train, 8, seed=0)
    one, two = next(it), next(it)  # the whole split each time, shuffled differently
    by_label = lambda b: b["inputs"][np.lexsort((b["inputs"].reshape(8, -1).sum(1), b["label"]))]
    assert not np.allclose(by_label(one), by_label(two))


def test_cache_refuses_random_per_example_crops():
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    cfg = small_config("resnet18", "imagenet2012").data
    cfg.image_size, cfg.cache = 16, True
    with pytest.raises(ConfigError, match="data.cache cannot keep randomly cropped"):
      pipeline.load(cfg)


def test_imagenet_config_trains_a_tiny_model_on_mock_data(tmp_path):
  """The ImageNet recipe's input (crops, uint8 batches normalized on the device) into a tiny
  grouped-bottleneck ResNet (ResNeXt's block; the ViT trains in tests/test_transformer.py)."""
  c = small_config("resnet18", "imagenet2012", total_epochs=None, total_steps=3, batch_size=16,
                   eval_batch_size=16, log_every=1, eval_every=3, checkpoint_every=3,
                   **{"data.image_size": 32, "schedule.warmup_steps": 1})
  c.model = dict(name="resnet", stage_sizes=(1, 1), widths=(8, 16), bottleneck=True, groups=2,
                 width_per_group=8, zero_init_residual=True)
  with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
    results = train.train_and_evaluate(c, str(tmp_path))
  assert results["step"] == 3 and np.isfinite(results["eval/loss"])
  assert "eval/top5_accuracy" in results


def test_cifar10_config_augments_with_crop_and_flip():
  c = small_config("resnet18", "cifar10")
  assert c.data.augment == "crop_flip"
  with tfds.testing.mock_data(num_examples=16):
    sources = pipeline.load(c.data)
    batch = next(pipeline.train_iterator(sources.train, 8, seed=0))
  assert batch["inputs"].shape == (8, 32, 32, 3)
