"""Bilinear grid sampling with the semantics of `torch.nn.functional.grid_sample`.

`grid[b, i, j] = (x, y)` in `[-1, 1]` names the point of `image[b]` that output pixel `(i, j)`
reads, `x` along the width (column) and `y` along the height (row). With `align_corners=True`,
-1 and 1 are the centres of the corner pixels; with `align_corners=False` they are the outer
edges of the corner pixels (half a pixel further out). Points outside the image read zeros
("zeros"), the nearest border pixel ("border"), or the image mirrored at its border
("reflection"), exactly as PyTorch, including PyTorch's gradients at and beyond the border.

How the taps are read (the part that matters for speed): each output pixel reads one 2x2 patch
of whole pixels (all channels per tap). The patch's corner is clamped into the image,
and the bilinear weights are assigned to the patch cells whose position matches the wanted taps,
so taps that fall outside the image simply get no weight (zero padding) without any masking of
the gathered values. A uint8 image is gathered as uint8 and converted to float only at those taps:
no float copy of the high-resolution image is ever made. A custom VJP reuses the gathered patch
for the gradient to the grid, and pays for the scatter-add into the image only when the image is
itself being differentiated.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from saliency_jax.ops import validation

PADDING_MODES = ("zeros", "border", "reflection")
IMPLEMENTATIONS = ("xla", "pallas", "auto")

# What implementation="auto" picks per backend (jax.default_backend()): the measured winner. The
# Pallas kernels have not been measured on a GPU yet, so "xla" everywhere. Once
# `benchmarks/sampler.py --implementations=xla,pallas` has measured a GPU (both for uint8 and
# float32 images, fwd and fwd+bwd), set "gpu" (jax.default_backend()'s name for CUDA and ROCm)
# to "pallas" here if it wins there.
_AUTO_IMPLEMENTATION = {"cpu": "xla", "gpu": "xla", "tpu": "xla"}


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


def _source_coordinate(coord: jax.Array, size: int, align_corners: bool,
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


def _axis_taps(coord: jax.Array, size: int):
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


def _gather_taps(image: jax.Array, row: jax.Array, col: jax.Array, rows: int, cols: int):
  """Reads the `rows x cols` (at most 2x2) patch at each start: `patch[r][c]` is `[B, h, w, C]`.

  The taps are separate flat-index gathers of whole pixels (all `C` channels at once); on CPU this
  measured about 2x faster than a single gather of `[2, 2, C]` slices.
  """
  b, height, width, channels = image.shape
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


def _interpolate(patch, wy, wx):
  """Sum of `wy[r] wx[c] patch[r][c]` over the (at most 2x2) patch, in float32."""
  out = 0.0
  for weight_row, patch_row in zip(wy, patch):
    row = 0.0
    for weight, tap in zip(wx, patch_row):
      row = row + weight[..., None] * tap.astype(jnp.float32)
    out = out + weight_row[..., None] * row
  return out


def _channel_dot(g: jax.Array, tap: jax.Array) -> jax.Array:
  """`sum_c g[..., c] * tap[..., c]` in float32."""
  if g.shape[-1] <= 8:
    # XLA:CPU reduces a short minor axis with a slow generic loop (measured ~10x slower than this
    # unrolled sum for RGB), and it fuses the unrolled form with the rest of the backward pass.
    return sum(g[..., c] * tap[..., c].astype(jnp.float32) for c in range(g.shape[-1]))
  return jnp.sum(g * tap.astype(jnp.float32), axis=-1)


def _coordinate_grads(dots, wy, wx, dwy, dwx):
  """Gradients to the pixel coordinates `x, y` from `dots[r][c] = <cotangent, patch[r][c]>`.

  d out / d x = sum_rc wy[r] dwx[c] patch[r][c], and likewise for y; with the channels already
  contracted against the cotangent, once per tap. Shared with the Pallas kernel.
  """
  grad_x = sum(a * b * dots[r][c] for r, a in enumerate(wy) for c, b in enumerate(dwx))
  grad_y = sum(a * b * dots[r][c] for r, a in enumerate(dwy) for c, b in enumerate(wx))
  return grad_x, grad_y


def _scatter_to_image(image: jax.Array, row: jax.Array, col: jax.Array, wy, wx,
                      g: jax.Array) -> jax.Array:
  """Gradient to `image [B, H, W, C]` of the bilinear read at the taps, for cotangent `g`.

  The transpose of the tap gathers is the scatter-add into the image: the expensive part of the
  backward pass, which callers run only when the image is differentiated.
  """
  patch_grad = tuple(tuple((a[..., None] * b[..., None] * g).astype(image.dtype) for b in wx)
                     for a in wy)
  _, scatter = jax.vjp(lambda im: _gather_taps(im, row, col, len(wy), len(wx)), image)
  (grad_image,) = scatter(patch_grad)
  return grad_image


class _Options(NamedTuple):
  """What the sampling kernels need to know besides the arrays (static under `jit`)."""
  size: tuple[int, int]  # The image's (H, W).
  align_corners: bool
  padding_mode: str


def _pixel_coordinates(grid: jax.Array, options: _Options):
  """Pixel coordinates `x, y [B, h, w]` of the normalised `grid [B, h, w, 2]`, padding applied."""
  height, width = options.size
  x = _source_coordinate(grid[..., 0], width, options.align_corners, options.padding_mode)
  y = _source_coordinate(grid[..., 1], height, options.align_corners, options.padding_mode)
  return x, y


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bilinear(options, image, grid):
  """Bilinear read of `image [B, H, W, C]` at the float32 `grid [B, h, w, 2]` (float32 out)."""
  x, y = _pixel_coordinates(grid, options)
  row, wy, _ = _axis_taps(y, options.size[0])
  col, wx, _ = _axis_taps(x, options.size[1])
  return _interpolate(_gather_taps(image, row, col, len(wy), len(wx)), wy, wx)


def _bilinear_fwd(options, image, grid):
  # symbolic_zeros=True: the primals arrive wrapped, with `.perturbed` telling whether the image
  # is being differentiated at all.
  image_perturbed = image.perturbed
  image, grid = image.value, grid.value
  x, y = _pixel_coordinates(grid, options)
  row, wy, _ = _axis_taps(y, options.size[0])
  col, wx, _ = _axis_taps(x, options.size[1])
  patch = _gather_taps(image, row, col, len(wy), len(wx))
  out = _interpolate(patch, wy, wx)
  # The patches stay in the image's dtype (uint8 is 4x smaller than float32); the coordinates
  # and weights are cheap to re-derive from the grid. The image itself is kept only when its
  # gradient is wanted.
  return out, (patch, grid, image if image_perturbed else None)


def _bilinear_bwd(options, residuals, g):
  patch, grid, image = residuals
  # The coordinates and their derivatives to the grid in one forward-mode pass, so that both
  # components of the grid's gradient come out of one expression (one pass over the cotangent
  # and the patches) instead of two slices' transposes added together.
  (x, y), (dx, dy) = jax.jvp(lambda gr: _pixel_coordinates(gr, options), (grid,),
                             (jnp.ones_like(grid),))
  row, wy, dwy = _axis_taps(y, options.size[0])
  col, wx, dwx = _axis_taps(x, options.size[1])
  g = jnp.zeros(x.shape + patch[0][0].shape[-1:], jnp.float32) if isinstance(
      g, jax.custom_derivatives.SymbolicZero) else g.astype(jnp.float32)
  # Contract the channels with the cotangent first, once per tap.
  dots = [[_channel_dot(g, tap) for tap in patch_row] for patch_row in patch]
  grad_x, grad_y = _coordinate_grads(dots, wy, wx, dwy, dwx)
  grad_image = None if image is None else _scatter_to_image(image, row, col, wy, wx, g)
  return grad_image, jnp.stack([grad_x * dx, grad_y * dy], axis=-1)


_bilinear.defvjp(_bilinear_fwd, _bilinear_bwd, symbolic_zeros=True)


@functools.partial(jax.jit, static_argnames=("align_corners", "padding_mode"))
def _grid_sample(image, grid, align_corners, padding_mode):
  options = _Options(tuple(image.shape[1:3]), align_corners, padding_mode)
  out = _bilinear(options, image, grid.astype(jnp.float32))
  return out.astype(image.dtype) if jnp.issubdtype(image.dtype, jnp.floating) else out


def grid_sample(
    image: jax.Array,
    grid: jax.Array,
    *,
    align_corners: bool = False,
    padding_mode: str = "zeros",
    implementation: str = "xla",
) -> jax.Array:
  """Samples `image` bilinearly at `grid`, as `torch.nn.functional.grid_sample(mode="bilinear")`.

  Args:
    image: `[B, H, W, C]` float32, bfloat16 (any float) or uint8. uint8 is read as 0..255 values
      and converted to float only at the sampled taps.
    grid: `[B, h, w, 2]` floating, the `(x, y)` = (column, row) positions in `[-1, 1]`.
    align_corners: True: -1 and 1 are the centres of the corner pixels (PyTorch before 1.3, the
      authors' code); False: their outer edges (PyTorch's default today).
    padding_mode: "zeros", "border" or "reflection": what points outside the image read.
    implementation: "xla" (the portable gather formulation above), "pallas" (the Pallas kernels
      of `pallas_sampling`, written for the GPU's Triton backend; in Pallas' slow interpret mode
      when the default backend is the CPU, which is meant for testing), or "auto" (whichever
      measured faster on the default backend). The numbers agree to float32 rounding.

  Returns:
    `[B, h, w, C]`: in the image's dtype for floating images (computed in float32), float32 in
    0..255 for uint8. NaN in the grid gives NaN at those outputs under `jit`.

  Gradients flow to the grid always and to a floating image when it is differentiated; the
  scatter-add into the image is not computed otherwise.

  Raises:
    ValueError: on bad shapes, dtypes or options, and (outside `jit`) a grid holding NaN or inf.
  """
  image = validation.check_image(image, "image")
  if not (jnp.issubdtype(image.dtype, jnp.floating) or image.dtype == jnp.uint8):
    raise ValueError(f"image must be floating or uint8; got dtype {image.dtype}.")
  if not hasattr(grid, "ndim"):
    grid = jnp.asarray(grid)
  if grid.ndim != 4 or grid.shape[-1] != 2:
    raise ValueError(f"grid must have shape [batch, height, width, 2]; got shape {grid.shape}.")
  if not jnp.issubdtype(grid.dtype, jnp.floating):
    raise ValueError(f"grid must be floating (normalised coordinates in [-1, 1]); got dtype "
                     f"{grid.dtype}.")
  if grid.shape[0] != image.shape[0]:
    raise ValueError(f"grid and image must have the same batch size; got grid shape "
                     f"{grid.shape} and image shape {image.shape}.")
  if padding_mode not in PADDING_MODES:
    raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}.")
  implementation = _resolve_implementation(implementation)
  validation.check_finite(grid, "grid")
  if implementation == "pallas":
    # Imported here: the XLA path must not pay for (or depend on) importing Pallas, and
    # pallas_sampling imports this module's helpers.
    from saliency_jax.ops import pallas_sampling
    return pallas_sampling.grid_sample(image, grid, align_corners=bool(align_corners),
                                       padding_mode=padding_mode,
                                       interpret=jax.default_backend() == "cpu")
  return _grid_sample(image, grid, bool(align_corners), padding_mode)


def _resolve_implementation(implementation: str) -> str:
  """Checks `implementation`; "auto" becomes the default backend's measured winner."""
  if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}.")
  if implementation == "auto":
    return _AUTO_IMPLEMENTATION.get(jax.default_backend(), "xla")
  return implementation
