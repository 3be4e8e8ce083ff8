"""Image preprocessing for classification records (config.data.image_size, augment, mean, std).

Two stages, so that a data set of fixed-size images can be cached decoded and still augmented:
  per example  a variable-size image -> image_size x image_size (only when data.image_size > 0):
               training with "inception_crop" takes a random-resized crop, everything else resizes
               the shorter side to image_size / eval_crop and takes the central crop; encoded
               JPEG / PNG bytes are decoded here, at reduced size where the crop allows
  per batch    training augmentation ("flip", "crop_flip"; "inception_crop" flips per example), uint8
               in, uint8 out; then Normalize (scale, mean and std -> float32): in the jitted step
               for the trainer's batches (steps.py), on the host for everything else
Training passes one numpy Generator per example, seeded from (seed, position in the global
stream) by the pipeline: the same example at the same position gets the same crop after a resume,
on any number of processes.
Evaluation passes none and is deterministic.
"""

import dataclasses
import io
import math
from typing import Any

import ml_collections
import numpy as np
from PIL import Image

from bigmodel_jax.faults import ConfigError

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


def inception_box(h: int, w: int, rng: np.random.Generator,
                  area: tuple[float, float] = (0.08, 1.0),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """The Inception crop's box (as torchvision's RandomResizedCrop): (top, left, height, width) of a
  random box covering `area` of an h x w image with aspect ratio in `ratio`; after 10 misses, the
  whole image with its aspect ratio clipped to `ratio`."""
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = h * w * rng.uniform(*area)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  aspect = w / h
  cw, ch = ((w, round(w / ratio[0])) if aspect < ratio[0] else
            (round(h * ratio[1]), h) if aspect > ratio[1] else (w, h))
  cw, ch = min(cw, w), min(ch, h)
  return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """The Inception crop of a decoded image, resized to size x size."""
  top, left, ch, cw = inception_box(*image.shape[:2], rng)
  return resize(image[top:top + ch, left:left + cw], size, size)


def decode_crop(data: bytes, size: int, rng: np.random.Generator | None,
                crop_fraction: float) -> np.ndarray:
  """Encoded JPEG / PNG bytes -> size x size x 3 uint8: with rng the Inception crop, flipped at
  random, else the central crop of central_crop (decode_scaled, then crop_resize)."""
  pil, box = decode_scaled(data, size, rng, crop_fraction)
  return crop_resize(pil, box, size, flip=rng is not None and rng.random() < 0.5)


def decode_scaled(data: bytes, size: int, rng: np.random.Generator | None,
                  crop_fraction: float) -> tuple[Image.Image, tuple[float, ...]]:
  """The decoded RGB image and the crop's box in its pixels. JPEGs decode at a reduced scale
  (1/2, 1/4, 1/8: PIL's draft mode, libjpeg's DCT scaling) when the box still has `size` pixels
  each way there, which large photographs and small crops allow."""
  pil = Image.open(io.BytesIO(data))
  w, h = pil.size
  if rng is not None:
    top, left, ch, cw = inception_box(h, w, rng)
  else:  # the shorter side scaled to size / crop_fraction, its central size x size
    cw = ch = min(h, w) * crop_fraction
    top, left = (h - ch) / 2, (w - cw) / 2
  if pil.format == "JPEG":
    pil.draft("RGB", (math.ceil(w * size / cw), math.ceil(h * size / ch)))
  sx, sy = pil.size[0] / w, pil.size[1] / h  # the scale decoded at
  pil = pil.convert("RGB") if pil.mode != "RGB" else pil  # grayscale, CMYK, palette, alpha
  pil.load()
  return pil, (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)


def crop_resize(pil: Image.Image, box: tuple[float, ...], size: int,
                flip: bool = False) -> np.ndarray:
  """The box cut and resized (bilinear, antialiased) in one PIL call, then flipped; only the
  size x size result becomes an array (a whole decoded photograph copied into numpy costs as
  much as decoding it, and numpy flips 3-byte pixels slowly)."""
  out = pil.resize((size, size), Image.Resampling.BILINEAR, box=box)
  return np.asarray(out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out)


@dataclasses.dataclass(frozen=True)
class Normalize:
  """uint8 images -> float32: times scale, minus mean, divided by std (data.scale, mean, std).
  The same operations on the host (numpy) or in the jitted step (jax.numpy), where the pipeline
  hands over uint8 (a quarter of the bytes to move)."""
  scale: float = 1.0
  mean: tuple[float, ...] = ()
  std: tuple[float, ...] = ()

  @classmethod
  def of(cls, cfg: ml_collections.ConfigDict) -> "Normalize":
    return cls(float(cfg.scale), tuple(map(float, cfg.mean)), tuple(map(float, cfg.std)))

  def __call__(self, inputs: Any) -> Any:  # numpy or jax arrays
    inputs = inputs.astype(np.float32)
    if self.scale != 1.0:
      inputs = inputs * np.float32(self.scale)
    if self.mean:
      inputs = inputs - np.asarray(self.mean, np.float32)
    if self.std:
      inputs = inputs / np.asarray(self.std, np.float32)
    return inputs


class Preprocess:
  """config.data's image settings as the two stages above."""

  def __init__(self, cfg: ml_collections.ConfigDict):
    if cfg.augment not in AUGMENTS:
      raise ConfigError(f"unknown data.augment '{cfg.augment}'; known: "
                        f"{', '.join(a or repr(a) for a in AUGMENTS)}")
    if cfg.augment == "inception_crop" and cfg.image_size <= 0:
      raise ConfigError("data.augment=inception_crop needs data.image_size > 0")
    self.size, self.augment, self.eval_crop = cfg.image_size, cfg.augment, cfg.eval_crop
    self.normalize = Normalize.of(cfg)
    self.random_per_example = cfg.augment == "inception_crop"

  def example(self, image: np.ndarray | bytes, rng: np.random.Generator | None) -> np.ndarray:
    if isinstance(image, bytes):  # an encoded image (read with SkipDecoding): decode_crop
      random = rng is not None and self.augment == "inception_crop"
      return decode_crop(image, self.size, rng if random else None, self.eval_crop)
    if self.size <= 0:
      return image
    if image.ndim != 3:
      raise ConfigError(f"data.image_size needs H x W x C images, got shape {image.shape}")
    if rng is not None and self.augment == "inception_crop":  # the crop, then the flip
      image = random_resized_crop(image, self.size, rng)
      return image[:, ::-1] if rng.random() < 0.5 else image
    return central_crop(image, self.size, self.eval_crop)

  def batch(self, inputs: np.ndarray, rngs: list[np.random.Generator] | None) -> np.ndarray:
    return self.normalize(self.augment_batch(inputs, rngs))

  def augment_batch(self, inputs: np.ndarray, rngs: list[np.random.Generator] | None
                    ) -> np.ndarray:
    """Training augmentation per batch, in the images' own dtype (uint8 stays uint8)."""
    if rngs is not None and self.augment:
      if inputs.ndim != 4:
        raise ConfigError(f"data.augment={self.augment} needs B x H x W x C images, "
                          f"got shape {inputs.shape}")
      inputs = self._augment(inputs, rngs)
    return inputs

  def _augment(self, inputs: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
    h, w, p = inputs.shape[1], inputs.shape[2], CROP_PADDING
    if self.augment == "crop_flip":
      out = np.empty_like(inputs)
      inputs = np.pad(inputs, ((0, 0), (p, p), (p, p), (0, 0)))
      for k, rng in enumerate(rngs):
        top, left = rng.integers(0, 2 * p + 1, size=2)
        image = inputs[k, top:top + h, left:left + w]
        out[k] = image[:, ::-1] if rng.random() < 0.5 else image
      return out
    if self.augment == "inception_crop":
      return inputs  # flipped per example, with the crop (example)
    out = np.empty_like(inputs)
    for k, rng in enumerate(rngs):
      out[k] = inputs[k, :, ::-1] if rng.random() < 0.5 else inputs[k]
    return out
