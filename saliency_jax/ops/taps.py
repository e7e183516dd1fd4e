"""The bilinear taps of grid sampling, shared by the XLA path and the Pallas kernels.

What both implementations of `grid_sample` compute per output pixel, written once so that they
cannot drift apart: the normalised coordinate -> pixel coordinate transform with PyTorch's padding
modes (`source_coordinate`), the clamped 2x2 patch and its bilinear weights (`axis_taps`), the
interpolation and the gradient to the coordinates from the patch (`interpolate`,
`coordinate_grads`), and, for the XLA path, the gathers of the patch and their transpose
(`gather_taps`, `scatter_to_image`).

Layout: images `[B, H, W, C]`; coordinates `[B, h, w]` in pixels (x along W, y along H).
"""

import jax
import jax.numpy as jnp

from saliency_jax.ops import native

# The largest index an int32 gather can address (JAX's default integer width).
_INT32_MAX = 2**31 - 1


def _clip_with_grad(coord: jax.Array, limit: float) -> jax.Array:
  # PyTorch's clip: gradient 1 strictly inside (0, limit) and 0 from the ends outwards, where
  # PyTorch counts the border itself as out of bounds (jnp.clip would split it at the ends).
  return jnp.where(coord <= 0, 0.0, jnp.where(coord >= limit, limit, coord))


def _reflect(coord: jax.Array, twice_low: int, twice_high: int) -> jax.Array:
  """Mirrors `coord` into `[twice_low / 2, twice_high / 2]`, as PyTorch's reflect_coordinates."""
  if twice_low == twice_high:
    return jnp.zeros_like(coord)
  low = twice_low / 2
  span = (twice_high - twice_low) / 2
  coord = coord - low
  coord = jnp.where(coord < 0, -coord, coord)  # PyTorch's sign convention at exactly 0.
  extra = jnp.fmod(coord, span)
  flips = jnp.floor(coord / span)
  return jnp.where(jnp.fmod(flips, 2) == 0, extra + low, span - extra + low)


def source_coordinate(coord: jax.Array, size: int, align_corners: bool,
                       padding_mode: str) -> jax.Array:
  """Normalised `[-1, 1]` coordinate -> pixel coordinate, padding mode applied."""
  if align_corners:
    coord = (coord + 1) / 2 * (size - 1)
  else:
    coord = ((coord + 1) * size - 1) / 2
  if padding_mode == "border":
    coord = _clip_with_grad(coord, size - 1)
  elif padding_mode == "reflection":
    if align_corners:
      coord = _reflect(coord, 0, 2 * (size - 1))
    else:
      coord = _reflect(coord, -1, 2 * size - 1)
    coord = _clip_with_grad(coord, size - 1)
  else:
    # Beyond one pixel outside, every tap reads zero; clamping there keeps the integer tap index
    # in range (and NaN in the grid propagates as NaN through the weights).
    coord = jnp.clip(coord, -2.0, size + 1.0)
  return coord


def axis_taps(coord: jax.Array, size: int):
  """Patch start and per-patch-cell weights (and their derivatives) along one axis.

  Returns `start` (int32, so that `start .. start + n - 1` lies in the image, `n = min(2, size)`)
  and tuples of `n` arrays shaped like `coord`: the weight of each patch cell and its derivative
  with respect to `coord`. Cells are kept as separate arrays (not a trailing axis of 2) so that all
  the elementwise work fuses into a single loop.
  """
  floor = jnp.floor(coord)
  frac = coord - floor
  first = floor.astype(jnp.int32)
  if size == 1:
    # The single pixel is the first tap when first == 0 and the second when first == -1.
    on_first, on_second = first == 0, first == -1
    weight = jnp.where(on_first, 1.0 - frac, 0.0) + jnp.where(on_second, frac, 0.0)
    dweight = jnp.where(on_first, -1.0, 0.0) + jnp.where(on_second, 1.0, 0.0)
    return jnp.zeros_like(first), (weight,), (dweight,)
  start = jnp.clip(first, 0, size - 2)
  # The wanted taps are first and first + 1; offset says where they sit in the clamped patch.
  offset = first - start
  zero = jnp.zeros_like(frac)
  weight0 = jnp.where(offset == 0, 1.0 - frac, jnp.where(offset == -1, frac, zero))
  weight1 = jnp.where(offset == 0, frac, jnp.where(offset == 1, 1.0 - frac, zero))
  dweight0 = jnp.where(offset == 0, -1.0, jnp.where(offset == -1, 1.0, zero))
  dweight1 = jnp.where(offset == 0, 1.0, jnp.where(offset == 1, -1.0, zero))
  return start, (weight0, weight1), (dweight0, dweight1)


def gather_taps(image: jax.Array, row: jax.Array, col: jax.Array, rows: int, cols: int):
  """Reads the `rows x cols` (at most 2x2) patch at each start: `patch[r][c]` is `[B, h, w, C]`.

  The taps are separate gathers of whole pixels (all `C` channels at once); on CPU this measured
  about 2x faster than a single gather of `[2, 2, C]` slices.
  """
  b, height, width, channels = image.shape
  if b * height * width - 1 > _INT32_MAX:
    return _gather_taps_batched(image, row, col, rows, cols)
  # One flat pixel index per tap into [B * H * W, C]: a single scalar index per read, which XLA
  # fuses with the index arithmetic (a [batch, position] index pair costs an extra pass).
  flat = image.reshape(b * height * width, channels)
  pixel = (jnp.arange(b, dtype=jnp.int32)[:, None, None] * (height * width)
           + row * width + col)[..., None]
  dnums = jax.lax.GatherDimensionNumbers(
      offset_dims=(3,), collapsed_slice_dims=(0,), start_index_map=(0,))

  def read(offset):
    return jax.lax.gather(flat, pixel + offset, dnums, slice_sizes=(1, channels),
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)

  return tuple(tuple(read(r * width + c) for c in range(cols)) for r in range(rows))


def _gather_taps_batched(image: jax.Array, row: jax.Array, col: jax.Array, rows: int, cols: int):
  """`gather_taps` for images whose flat pixel index would overflow int32.

  Each image is gathered by its own (row, column) pair, batched over the images, so no index
  exceeds the image's height or width.
  """
  channels = image.shape[-1]
  dnums = jax.lax.GatherDimensionNumbers(
      offset_dims=(3,), collapsed_slice_dims=(1, 2), start_index_map=(1, 2),
      operand_batching_dims=(0,), start_indices_batching_dims=(0,))

  def read(r, c):
    index = jnp.stack([row + r, col + c], axis=-1)
    return jax.lax.gather(image, index, dnums, slice_sizes=(1, 1, 1, channels),
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)

  return tuple(tuple(read(r, c) for c in range(cols)) for r in range(rows))


def interpolate(patch, wy, wx):
  """Sum of `wy[r] wx[c] patch[r][c]` over the (at most 2x2) patch, in float32."""
  out = 0.0
  for weight_row, patch_row in zip(wy, patch):
    row = 0.0
    for weight, tap in zip(wx, patch_row):
      row = row + weight[..., None] * tap.astype(jnp.float32)
    out = out + weight_row[..., None] * row
  return out


def channel_dot(g: jax.Array, tap: jax.Array) -> jax.Array:
  """`sum_c g[..., c] * tap[..., c]` in float32."""
  if g.shape[-1] <= 8:
    # XLA:CPU reduces a short minor axis with a slow generic loop (measured ~10x slower than this
    # unrolled sum for RGB), and it fuses the unrolled form with the rest of the backward pass.
    return sum(g[..., c] * tap[..., c].astype(jnp.float32) for c in range(g.shape[-1]))
  return jnp.sum(g * tap.astype(jnp.float32), axis=-1)


def coordinate_grads(dots, wy, wx, dwy, dwx):
  """Gradients to the pixel coordinates `x, y` from `dots[r][c] = <cotangent, patch[r][c]>`.

  d out / d x = sum_rc wy[r] dwx[c] patch[r][c], and likewise for y; with the channels already
  contracted against the cotangent, once per tap. Shared with the Pallas kernel.
  """
  grad_x = sum(a * b * dots[r][c] for r, a in enumerate(wy) for c, b in enumerate(dwx))
  grad_y = sum(a * b * dots[r][c] for r, a in enumerate(dwy) for c, b in enumerate(wx))
  return grad_x, grad_y


def scatter_to_image(image: jax.Array, row: jax.Array, col: jax.Array, wy, wx,
                      g: jax.Array) -> jax.Array:
  """Gradient to `image [B, H, W, C]` of the bilinear read at the taps, for cotangent `g`.

  The transpose of the tap gathers is the scatter-add into the image: the expensive part of the
  backward pass, which callers run only when the image is differentiated.
  """
  def xla(row, col, wy, wx, g):
    patch_grad = tuple(tuple((a[..., None] * b[..., None] * g).astype(image.dtype) for b in wx)
                       for a in wy)
    _, scatter = jax.vjp(lambda im: gather_taps(im, row, col, len(wy), len(wx)), image)
    (grad_image,) = scatter(patch_grad)
    return grad_image

  if image.dtype != jnp.float32:
    return xla(row, col, wy, wx, g)
  # On the CPU a kernel that sums each image's taps in one loop: XLA:CPU's scatter-add (one
  # loop per tap and pixel) took about half of a dense model's unwarp (benchmarks/README.md).
  fused = lambda row, col, wy, wx, g: native.scatter_to_image(image.shape, row, col, wy, wx, g)
  return native.dispatch(fused, xla, row, col, tuple(wy), tuple(wx), g.astype(jnp.float32))
