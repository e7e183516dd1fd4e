"""Resizing as small matrix products.

Both resizes here are separable linear maps, so each is written as one interpolation matrix per
spatial axis and applied with two matrix products. That is exact, differentiable, cheap for the
sizes this library meets (grids and low-resolution views), and it runs on the matrix units of GPUs
and TPUs instead of generic gathers. The matrices are built with NumPy at trace time, so they are
constants of the compiled program.

Layout: batched, channels-last (`[B, H, W, C]`). Values are not rescaled: a uint8 image gives
float32 values in 0..255.
"""

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import validation

_HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=256)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """`[out_size, in_size]` matrix of 1-D linear interpolation, half-pixel convention.

  Row `o` holds the weights that `torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False)` gives output pixel `o`: source position `(o + 0.5) * in / out - 0.5`,
  clamped at 0 below (so the first output pixels repeat the edge value), no anti-aliasing.
  """
  scale = in_size / out_size
  src = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = src - lo
  matrix = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  np.add.at(matrix, (rows, lo), 1.0 - frac)
  np.add.at(matrix, (rows, hi), frac)
  return matrix


@functools.lru_cache(maxsize=256)
def area_matrix(in_size: int, out_size: int) -> np.ndarray:
  """`[out_size, in_size]` matrix of adaptive average pooling along one axis.

  Output `o` averages inputs `floor(o * in / out)` to `ceil((o + 1) * in / out) - 1`, the windows
  of `torch.nn.functional.adaptive_avg_pool2d` (they overlap when `in` is not a multiple of `out`).
  """
  matrix = np.zeros((out_size, in_size), np.float64)
  for o in range(out_size):
    start = (o * in_size) // out_size
    end = -((-(o + 1) * in_size) // out_size)
    matrix[o, start:end] = 1.0 / (end - start)
  return matrix


def _separable_resize(
    image: jax.Array, rows: np.ndarray, cols: np.ndarray, dtype: jnp.dtype
) -> jax.Array:
  # Contract the longer axis first, so the intermediate is as small as possible.
  x = image.astype(dtype)
  rows = jnp.asarray(rows, dtype)
  cols = jnp.asarray(cols, dtype)
  return jnp.einsum("hH,bHWc,wW->bhwc", rows, x, cols, precision=_HIGHEST,
                    optimize="optimal")


def _output_dtype(image: jax.Array) -> jnp.dtype:
  return image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.float32


def bilinear_resize(image: jax.Array, out_shape: Sequence[int]) -> jax.Array:
  """Bilinear resize with the half-pixel convention and no anti-aliasing.

  Equals `torch.nn.functional.interpolate(x, size=out_shape, mode="bilinear",
  align_corners=False)` (the default of `torch.nn.Upsample(mode="bilinear")`), which is how the
  authors upsample the saliency map and the sampling grid.

  Args:
    image: `[B, H, W, C]`, floating or integer (integers are read as their values).
    out_shape: `(h, w)`, positive.

  Returns:
    `[B, h, w, C]`, the image's floating dtype, or float32 for integer images.
  """
  image = validation.check_image(image, "image")
  h, w = validation.check_shape(out_shape, "out_shape")
  dtype = _output_dtype(image)
  return _separable_resize(
      image, bilinear_matrix(image.shape[1], h), bilinear_matrix(image.shape[2], w), dtype)


def area_resize(image: jax.Array, out_shape: Sequence[int]) -> jax.Array:
  """Adaptive average pooling to `out_shape`, as `torch.nn.functional.adaptive_avg_pool2d`.

  This is how the authors make the low-resolution view that the saliency network sees.

  Args:
    image: `[B, H, W, C]`, floating or uint8 (uint8 is averaged as 0..255 values).
    out_shape: `(h, w)`, positive.

  Returns:
    `[B, h, w, C]`, the image's floating dtype, or float32 for integer images.
  """
  image = validation.check_image(image, "image")
  h, w = validation.check_shape(out_shape, "out_shape")
  dtype = _output_dtype(image)
  return _separable_resize(
      image, area_matrix(image.shape[1], h), area_matrix(image.shape[2], w), dtype)
