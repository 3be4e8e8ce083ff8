"""Image preprocessing for classification records (config.data.image_size, augment, mean, std).

Two stages, so that a data set of fixed-size images can be cached decoded and still augmented:
  per example  a variable-size image -> image_size x image_size (only when data.image_size > 0):
               training with "inception_crop" takes a random-resized crop, everything else resizes
               the shorter side to image_size / eval_crop and takes the central crop
  per batch    training augmentation ("flip", "crop_flip"; "inception_crop" flips here), then
               scale, mean and std -> float32
Training passes one numpy Generator per example, seeded from (seed, position in the global
stream) by the pipeline: the same example at the same position gets the same crop after a resume,
on any number of processes.
Evaluation passes none and is deterministic.
"""

import math

import ml_collections
import numpy as np
from PIL import Image

from bigmodel_jax.config import ConfigError

AUGMENTS = ("", "flip", "crop_flip", "inception_crop")
CROP_PADDING = 4  # crop_flip: pixels of zero padding on each side before the random crop


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear (antialiased) resize of a uint8 H x W x C image with PIL."""
  if image.dtype != np.uint8:
    raise ConfigError(f"data.image_size needs uint8 images, got {image.dtype}")
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
  return out[..., None] if channels == 1 else out


def central_crop(image: np.ndarray, size: int, crop_fraction: float) -> np.ndarray:
  """Resize the shorter side to size / crop_fraction, then take the central size x size."""
  h, w = image.shape[:2]
  short = round(size / crop_fraction)
  nh, nw = (short, max(size, round(w * short / h))) if h <= w else (max(size, round(h * short / w)), short)
  image = resize(image, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image[top:top + size, left:left + size]


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                        area: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
  """The Inception crop (as torchvision's RandomResizedCrop): a random box covering `area` of the
  image with aspect ratio in `ratio`, resized to size x size; after 10 misses, the whole image
  with its aspect ratio clipped to `ratio`."""
  h, w = image.shape[:2]
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = h * w * rng.uniform(*area)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
      break
  else:
    aspect = w / h
    cw, ch = ((w, round(w / ratio[0])) if aspect < ratio[0] else
              (round(h * ratio[1]), h) if aspect > ratio[1] else (w, h))
    cw, ch = min(cw, w), min(ch, h)
    top, left = (h - ch) // 2, (w - cw) // 2
  return resize(image[top:top + ch, left:left + cw], size, size)


class Preprocess:
  """config.data's image settings as the two stages above."""

  def __init__(self, cfg: ml_collections.ConfigDict):
    if cfg.augment not in AUGMENTS:
      raise ConfigError(f"unknown data.augment '{cfg.augment}'; known: "
                        f"{', '.join(a or repr(a) for a in AUGMENTS)}")
    if cfg.augment == "inception_crop" and cfg.image_size <= 0:
      raise ConfigError("data.augment=inception_crop needs data.image_size > 0")
    self.size, self.augment, self.eval_crop, self.scale = (
        cfg.image_size, cfg.augment, cfg.eval_crop, cfg.scale)
    self.mean = np.asarray(cfg.mean, np.float32) if len(cfg.mean) else None
    self.std = np.asarray(cfg.std, np.float32) if len(cfg.std) else None
    self.random_per_example = cfg.augment == "inception_crop"

  def example(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    if self.size <= 0:
      return image
    if image.ndim != 3:
      raise ConfigError(f"data.image_size needs H x W x C images, got shape {image.shape}")
    if rng is not None and self.augment == "inception_crop":
      return random_resized_crop(image, self.size, rng)
    return central_crop(image, self.size, self.eval_crop)

  def batch(self, inputs: np.ndarray, rngs: list[np.random.Generator] | None) -> np.ndarray:
    if rngs is not None and self.augment:
      if inputs.ndim != 4:
        raise ConfigError(f"data.augment={self.augment} needs B x H x W x C images, "
                          f"got shape {inputs.shape}")
      inputs = self._augment(inputs, rngs)
    inputs = inputs.astype(np.float32)
    if self.scale != 1.0:
      inputs *= np.float32(self.scale)
    if self.mean is not None:
      inputs -= self.mean
    if self.std is not None:
      inputs /= self.std
    return inputs

  def _augment(self, inputs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    out = np.empty_like(inputs)
    h, w, p = inputs.shape[1], inputs.shape[2], CROP_PADDING
    if self.augment == "crop_flip":
      inputs = np.pad(inputs, ((0, 0), (p, p), (p, p), (0, 0)))
    for k, rng in enumerate(rngs):
      image = inputs[k]
      if self.augment == "crop_flip":
        top, left = rng.integers(0, 2 * p + 1, size=2)
        image = image[top:top + h, left:left + w]
      out[k] = image[:, ::-1] if rng.random() < 0.5 else image
    return out
