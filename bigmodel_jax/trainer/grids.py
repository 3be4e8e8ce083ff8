"""Samples drawn as one PNG grid: a generative run's WORKDIR/samples/STEP.png at every
evaluation, and `python -m bigmodel_jax.sample`'s images."""

import io
import math

import numpy as np
from PIL import Image

from bigmodel_jax import storage

COLUMNS = 10  # samples per row of an unconditional model's grid


def rows_of(x: np.ndarray, labels: np.ndarray, rows: int, columns: int) -> np.ndarray:
  """rows x columns samples: row r the first samples of class r (or the first samples)."""
  if rows == 1 or len(np.unique(labels)) == 1:
    n = min(len(x), rows * columns)
    return x[:n].reshape(math.ceil(n / columns), columns, *x.shape[1:])
  return np.stack([x[labels == r][:columns] for r in range(rows)])


def save(x: np.ndarray, path: str, zoom: int = 4) -> None:
  """R x C samples -> one PNG: images (H x W x 1 or 3) values in [0, 1]; signals (L) plotted.
  Written atomically (a reader never sees half a file)."""
  if x.ndim == 3:  # R x C x L signals: each a small plot
    x = _plot(x)
  x = np.clip(x, 0, 1)
  rows, cols, h, w, ch = x.shape
  gap = 1
  canvas = np.ones((rows * (h + gap) + gap, cols * (w + gap) + gap, ch), np.float32)
  for r in range(rows):
    for c in range(cols):
      canvas[gap + r * (h + gap):gap + r * (h + gap) + h,
             gap + c * (w + gap):gap + c * (w + gap) + w] = x[r, c]
  image = (canvas * 255).round().astype(np.uint8).repeat(zoom, 0).repeat(zoom, 1)
  image = image[..., 0] if ch == 1 else image
  png = io.BytesIO()
  Image.fromarray(image).save(png, format="PNG")
  storage.write(path, png.getvalue())


def _plot(x_RxCxL: np.ndarray, height: int = 24) -> np.ndarray:
  """Signals as dark curves on white, R x C x height x L x 1, one scale for all."""
  lo, hi = float(x_RxCxL.min()), float(x_RxCxL.max())
  y = np.round((1 - (x_RxCxL - lo) / max(hi - lo, 1e-9)) * (height - 1)).astype(int)
  out = np.ones((*x_RxCxL.shape[:2], height, x_RxCxL.shape[2], 1), np.float32)
  for j in range(x_RxCxL.shape[2]):
    nxt = y[..., min(j + 1, x_RxCxL.shape[2] - 1)]
    top, bottom = np.minimum(y[..., j], nxt), np.maximum(y[..., j], nxt)
    rows = np.arange(height)[None, None]
    out[..., j, 0] = np.where((rows >= top[..., None]) & (rows <= bottom[..., None]), 0.0,
                              out[..., j, 0])
  return out
