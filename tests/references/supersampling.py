"""Independent reference for anti-aliased sampling: brute-force supersampling of the footprint.

Each output pixel's footprint is the parallelogram spanned by the grid's local Jacobian (central
differences, `np.gradient`); its mean is taken from `k x k` plain bilinear point samples
(`grid_sample`, no anti-aliasing), which converges to the exact area average as `k` grows. Shared
by the anti-aliasing tests and the unzoom benchmark's accuracy report.
"""
import numpy as np

import saliency_jax as sj


def zone_plate(n: int) -> np.ndarray:
  """`[1, n, n, 1]` float32 zone plate: a chirp in radius, aliasing at every sampling rate."""
  ys, xs = np.meshgrid(np.arange(n) - n / 2, np.arange(n) - n / 2, indexing="ij")
  return (0.5 + 0.5 * np.cos(np.pi * (xs ** 2 + ys ** 2) / n))[None, :, :, None].astype(np.float32)


def supersampled(image: np.ndarray, grid: np.ndarray, k: int = 16) -> np.ndarray:
  """Mean of k x k bilinear point samples over each output pixel's Jacobian footprint (batch 1,
  align_corners=True)."""
  g = np.asarray(grid, np.float64)[0]
  height, width = image.shape[1:3]
  x = (g[..., 0] + 1) / 2 * (width - 1)
  y = (g[..., 1] + 1) / 2 * (height - 1)
  xv, xu = np.gradient(x)
  yv, yu = np.gradient(y)
  offsets = (np.arange(k) + 0.5) / k - 0.5
  total = 0.0
  for a in offsets:
    for b in offsets:
      px, py = x + a * xu + b * xv, y + a * yu + b * yv
      points = np.stack([px / (width - 1) * 2 - 1, py / (height - 1) * 2 - 1], -1)
      total = total + np.asarray(sj.grid_sample(image, points[None].astype(np.float32),
                                                align_corners=True))
  return total / k ** 2
