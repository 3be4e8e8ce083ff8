"""A folder of synthetic JPEGs in the image_folder layout, to try and benchmark the image input
pipeline without ImageNet: gradients, shapes and pixel noise at ImageNet's typical size (about
500 x 375) and quality (90), ~90 KB each, so they decode and compress like photographs rather
than flat colour.

  python -m bigmodel_jax.data.jpeg_folder DIR [--images=2000] [--classes=10]
"""

import argparse
import io
import os

import numpy as np


def synthetic_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
  """A gradient, a few shapes and pixel noise: compresses like a photograph, not a flat colour."""
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  image = np.stack([x / width * rng.uniform(100, 255), y / height * rng.uniform(100, 255),
                    (x + y) / (height + width) * rng.uniform(100, 255)], -1)
  for _ in range(int(rng.integers(3, 8))):
    cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, height / 3)
    image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
  image += rng.normal(0, 19, image.shape)  # ~90 KB per 500 x 375 image at quality 90
  return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic(directory: str, images: int = 2000, classes: int = 10, val_fraction: float = 0.1,
                    size: tuple[int, int] = (375, 500), quality: int = 90, seed: int = 0) -> None:
  """SPLIT/CLASS/NNNNN.JPEG files around `size` (height, width; +-15%), split train / val."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  for i in range(images):
    split = "val" if (i // classes) % round(1 / val_fraction) == 0 else "train"  # every class
    folder = os.path.join(directory, split, f"class_{i % classes:03d}")
    os.makedirs(folder, exist_ok=True)
    h, w = (int(s * rng.uniform(0.85, 1.15)) for s in size)
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(rng, h, w)).save(buf, "JPEG", quality=quality)
    with open(os.path.join(folder, f"{i:05d}.JPEG"), "wb") as f:
      f.write(buf.getvalue())


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description="Write a folder of synthetic JPEGs (train/, val/).")
  parser.add_argument("directory")
  parser.add_argument("--images", type=int, default=2000)
  parser.add_argument("--classes", type=int, default=10)
  parser.add_argument("--height", type=int, default=375)
  parser.add_argument("--width", type=int, default=500)
  args = parser.parse_args()
  write_synthetic(args.directory, args.images, args.classes, size=(args.height, args.width))
  print(f"wrote {args.images} images in {args.directory}")
