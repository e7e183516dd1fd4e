"""Resizing as small matrix products, and the grid's upsampling from two neighbours.

Both resizes are separable linear maps. The bilinear one is written as an interpolation matrix per
spatial axis applied with two matrix products: exact, differentiable without scatters, cheap at
the sizes this library meets (grids, low-resolution views), and on the matrix units of GPUs and
TPUs. `interpolate_planes` computes the same upsampling from the two neighbours of each output
row, for the sampling grid where reading memory is cheaper than the matrix product (CPU, GPU). Area pooling of large uint8 images uses exact integer running sums instead (a dense matrix
there would cost ~30 GFLOP per batch). The matrices are built with NumPy at trace time, so they
are constants of the compiled program.

Layout: batched, channels-last (`[B, H, W, C]`). Values are not rescaled: a uint8 image gives
float32 values in 0..255.
"""

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import sharding
from saliency_jax.ops import validation

_HIGHEST = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=256)
def _two_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per output: the two source indices `lo, hi` and the weight `frac` of `hi` (int64, float64).

  The half-pixel convention of `torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False)`: source position `(o + 0.5) * in / out - 0.5`, clamped at 0 below (so the
  first output pixels repeat the edge value), no anti-aliasing.
  """
  src = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  return lo, hi, src - lo


@functools.lru_cache(maxsize=256)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """`[out_size, in_size]` matrix of 1-D linear interpolation, half-pixel convention.

  Row `o` holds the weights that `torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False)` gives output pixel `o`, at the taps of `_two_taps`.
  """
  lo, hi, frac = _two_taps(in_size, out_size)
  matrix = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  np.add.at(matrix, (rows, lo), 1.0 - frac)
  np.add.at(matrix, (rows, hi), frac)
  return matrix


def _two_tap_rows(x: jax.Array, out_size: int) -> jax.Array:
  """`x [N, H, W]` interpolated along axis 1 from the two neighbours of each output row."""
  lo, hi, frac = _two_taps(x.shape[1], out_size)
  low, high = jnp.take(x, lo, axis=1), jnp.take(x, hi, axis=1)
  return low + (high - low) * jnp.asarray(frac[None, :, None], x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def interpolate_planes(planes: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
  """`planes [N, H, W]` (float) -> `[N, h, w]`, bilinear with the half-pixel convention.

  The numbers of `resize_planes(planes, bilinear_matrix(H, h), bilinear_matrix(W, w))` (to float32
  rounding). The rows, the step that writes the whole output, read the two neighbours of each
  output row instead of a matrix product, which costs `H` multiply-adds per output value: for a
  31 -> 224 grid, one pass over the output, ~4x faster. Derivatives use the matrices (the
  transpose of the neighbour reads would be a scatter-add), the columns last, so that the
  gradient contracts the cotangent's minor axis first and reads it in its own layout.
  """
  # The columns as a small matrix product, which also writes them out: read from inside the
  # rows' loop instead, they would be recomputed for every output value.
  cols = jnp.asarray(bilinear_matrix(planes.shape[2], out_shape[1]).T, planes.dtype)
  return _two_tap_rows(jnp.matmul(planes, cols, precision=_HIGHEST), out_shape[0])


@interpolate_planes.defjvp
def _interpolate_planes_jvp(out_shape, primals, tangents):
  (planes,), (tangent,) = primals, tangents
  _, height, width = planes.shape
  rows = jnp.asarray(bilinear_matrix(height, out_shape[0]), tangent.dtype)
  cols = jnp.asarray(bilinear_matrix(width, out_shape[1]).T, tangent.dtype)
  tangent = jnp.einsum("ia,nac->nic", rows, tangent, precision=_HIGHEST)
  return interpolate_planes(planes, out_shape), jnp.matmul(tangent, cols, precision=_HIGHEST)


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


def _output_dtype(image: jax.Array) -> jnp.dtype:
  return image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.float32


def resize_planes(planes: jax.Array, rows: np.ndarray, cols: np.ndarray) -> jax.Array:
  """`rows [h, H]`, `planes [N, H, W]` (float), `cols [w, W]` -> `rows @ plane @ cols.T`.

  Two plain matrix products: the columns as `[N H, W] @ [W, w]`, then the rows as one
  `[h, H] @ [H, N w]` product after a transpose of the small intermediate (one large product is
  faster than N small batched ones on CPU). The final transpose back to `[N, h, w]` fuses into
  whatever consumes the result.
  """
  n, height, width = planes.shape
  h, w = rows.shape[0], cols.shape[0]
  out = jnp.matmul(planes, jnp.asarray(cols.T, planes.dtype), precision=_HIGHEST)
  out = jnp.transpose(out, (1, 0, 2)).reshape(height, n * w)
  out = jnp.matmul(jnp.asarray(rows, planes.dtype), out, precision=_HIGHEST)
  return jnp.transpose(out.reshape(h, n, w), (1, 0, 2))


def _window_sums(x: jax.Array, out_size: int, axis: int) -> tuple[jax.Array, np.ndarray]:
  """Sums over the adaptive-pooling windows along `axis`, and the window sizes."""
  in_size = x.shape[axis]
  start = (np.arange(out_size) * in_size) // out_size
  end = -((-(np.arange(out_size) + 1) * in_size) // out_size)
  if in_size % out_size == 0:
    # Equal, disjoint windows: a reshape and a sum.
    shape = x.shape[:axis] + (out_size, in_size // out_size) + x.shape[axis + 1:]
    return jnp.sum(x.reshape(shape), axis=axis + 1), end - start
  if jnp.issubdtype(x.dtype, jnp.integer):
    # Overlapping windows of varying size: differences of the running sum at the window ends,
    # exact in int32 (`area_resize` reads integers in int32 only where no sum can overflow).
    zero = jnp.zeros_like(jax.lax.slice_in_dim(x, 0, 1, axis=axis))
    running = jnp.concatenate([zero, jnp.cumsum(x, axis=axis)], axis=axis)
    return jnp.take(running, end, axis=axis) - jnp.take(running, start, axis=axis), end - start
  # Floats: a running sum would round at the scale of the whole row, so use the window matrix.
  counts = end - start
  ones = jnp.asarray(area_matrix(in_size, out_size) * counts[:, None], x.dtype)
  return jnp.moveaxis(jnp.tensordot(ones, x, axes=[[1], [axis]], precision=_HIGHEST), 0,
                      axis), counts


def _exact_in_int32(x: jax.Array, bound: int, out_size: int, axis: int) -> jax.Array:
  """`x` in int32 if its window sums along `axis` cannot overflow (|x| <= bound), else float32.

  Exact integer sums keep the pooling of uint8 images exact without a float copy of the image;
  a running sum (overlapping windows) reaches the whole axis' total, so that is its bound.
  """
  if jnp.issubdtype(x.dtype, jnp.floating):
    return x
  in_size = x.shape[axis]
  span = in_size // out_size if in_size % out_size == 0 else in_size
  return x.astype(jnp.int32 if bound * span <= 2**31 - 1 else jnp.float32)


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
  out_shape = validation.check_shape(out_shape, "out_shape")
  return sharding.batch_parallel(functools.partial(_bilinear_resize, out_shape=out_shape))(image)


def _bilinear_resize(image: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
  h, w = out_shape
  b, height, width, c = image.shape
  # As matrices: exact, differentiable without any scatter, and on the matrix units of GPUs and
  # TPUs. (Reading two neighbours per output is fewer flops on CPU, but XLA then fuses and
  # re-evaluates it inside every consumer; measured slower end to end.)
  planes = jnp.moveaxis(image.astype(_output_dtype(image)), 3, 1).reshape(b * c, height, width)
  out = resize_planes(planes, bilinear_matrix(height, h), bilinear_matrix(width, w))
  return jnp.moveaxis(out.reshape(b, c, h, w), 1, 3)


def area_resize(image: jax.Array, out_shape: Sequence[int]) -> jax.Array:
  """Adaptive average pooling to `out_shape`, as `torch.nn.functional.adaptive_avg_pool2d`.

  This is how the authors make the low-resolution view that the saliency network sees. Each
  output averages the input window `floor(o * in / out) .. ceil((o + 1) * in / out) - 1`; windows
  overlap when `in` is not a multiple of `out`.

  Args:
    image: `[B, H, W, C]`, floating or integer (integers are averaged as their values: in exact
      int32 sums wherever no sum can overflow, as for uint8 images of up to 8 megapixels, in
      float32 otherwise).
    out_shape: `(h, w)`, positive.

  Returns:
    `[B, h, w, C]`, the image's floating dtype, or float32 for integer images.
  """
  image = validation.check_image(image, "image")
  out_shape = validation.check_shape(out_shape, "out_shape")
  return sharding.batch_parallel(functools.partial(_area_resize, out_shape=out_shape))(image)


def _area_resize(image: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
  h, w = out_shape
  dtype = _output_dtype(image)
  if jnp.issubdtype(image.dtype, jnp.integer):
    info = jnp.iinfo(image.dtype)
    bound = max(-int(info.min), int(info.max))
  else:
    bound = 0
  x, rows = _window_sums(_exact_in_int32(image, bound, h, 1), h, 1)
  x, cols = _window_sums(_exact_in_int32(x, bound * int(rows.max()), w, 2), w, 2)
  return x.astype(dtype) / jnp.asarray(np.outer(rows, cols)[:, :, None], dtype)
