"""Anti-aliased grid sampling: trilinear reads of an area-averaged pyramid (a mipmap).

Plain bilinear sampling reads 4 source pixels per output pixel whatever the output pixel's
footprint in the source: where the grid compresses (several source pixels per output pixel),
fine detail aliases. Here each output pixel averages the source over (about) its footprint:
- the pyramid: level 0 is the image, level `k` halves level `k - 1` by area averaging
  (`area_resize`, exact 2x2 means for even sizes), down to a single pixel;
- the footprint: the grid's local Jacobian `J` (source pixels per output pixel, by central
  differences over the grid, one-sided at its border, as `local_magnification`) gives the
  footprint's size `rho = sqrt((|J e_u|^2 + |J e_v|^2) / 2)`, the root mean square of its sides
  (smooth in the grid, unlike the longer side, and within sqrt(2) of it);
- the level `lam = log2(rho)`, clipped to `[0, levels - 1]`: where the sampling is denser than
  the source (`rho <= 1`) level 0 alone is read, which is plain bilinear sampling, no blur;
- the read: bilinear in levels `floor(lam)` and `floor(lam) + 1` at the output pixel's source
  position (each level's pixel centres in level-0 coordinates: `(k + 0.5) * scale - 0.5`),
  blended linearly by the fractional level (trilinear filtering).
Gradients reach the grid through the read positions and through the level weights (`lam`
depends on the grid's differences); a floating image gets gradients through the pyramid.

Memory and dtype: the pyramid is one flat atlas of levels 1.. (level 0 is read from the image
itself), so that each output pixel reads its two levels with 8 tap gathers, like `grid_sample`'s
4. A uint8 image's levels are float32, the exact area means (4/3 of the image's bytes): rounded
to integers they would drop the detail below one grey level that uniform downsampling keeps, and
the identity warp would no longer be uniform downsampling. uint8 images are averaged from
integer sums and never converted to float at full resolution; a float image's levels keep its
dtype. Padding modes apply at level 0 (as `grid_sample`); with "zeros" each level fades to zero
over its own outer half pixel.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import fusion
from saliency_jax.ops import local_magnification
from saliency_jax.ops import native
from saliency_jax.ops import taps


INT32_MAX = 2**31 - 1


def level_shapes(height: int, width: int) -> list[tuple[int, int]]:
  """Pyramid level sizes: halved (rounding up) until a single pixel."""
  shapes = [(height, width)]
  while shapes[-1] != (1, 1):
    h, w = shapes[-1]
    shapes.append(((h + 1) // 2, (w + 1) // 2))
  return shapes


def atlas_rows(batch: int, height: int, width: int) -> int:
  """Rows of the flat atlas of levels 1.. (tap indices are int32: must stay below 2^31)."""
  return batch * sum(h * w for h, w in level_shapes(height, width)[1:]) + width + 2


def _halve(level):
  """2x2 box filter (an odd last row or column is replicated first): exact means, float32 for a
  uint8 level (summed as integers: no float copy of the full-resolution image)."""
  _, h, w, _ = level.shape
  if h % 2 or w % 2:
    level = jnp.pad(level, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
  integer = level.dtype == jnp.uint8
  wide = lambda x: x.astype(jnp.uint16 if integer else jnp.float32)
  total = (wide(level[:, 0::2, 0::2]) + wide(level[:, 1::2, 0::2])
           + wide(level[:, 0::2, 1::2]) + wide(level[:, 1::2, 1::2]))
  return (0.25 * total.astype(jnp.float32)).astype(jnp.float32 if integer else level.dtype)


def _halve_window(level):
  """`_halve` of a floating level by a 2x2 `reduce_window` (the same numbers)."""
  _, h, w, _ = level.shape
  if h % 2 or w % 2:
    level = jnp.pad(level, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
  # A Python 0.0 makes it a `reduce_window_sum`, which (unlike the generic reduce_window that a
  # typed zero gives) has a gradient: the pyramid of a floating image is differentiated.
  total = jax.lax.reduce_window(level.astype(jnp.float32), 0.0, jax.lax.add, (1, 2, 2, 1),
                                (1, 2, 2, 1), "VALID")
  return (0.25 * total).astype(level.dtype)


def _pyramid(image):
  """Levels 1.. of `image [B, H, W, C]` (level 0 is the image itself). Level `k` pixel `(i, j)`
  is the mean of level-0 pixels `[2^k i, 2^k (i + 1)) x [2^k j, 2^k (j + 1))`, the image's last
  row and column replicated beyond it."""
  # Level 1 straight from the image (strided reads fuse with the integer sums: no wide copy of
  # the full-resolution image); the others by reduce_window, which XLA:CPU does not fuse into
  # its consumers, so each level is computed once from the previous one (elementwise halvings
  # were recomputed from the image inside every later level).
  levels = [_halve(image)]
  for _ in level_shapes(*image.shape[1:3])[2:]:
    levels.append(_halve_window(levels[-1]))
  return levels


def _atlas(levels):
  """One flat `[P, C]` array of the levels (plus zero pad rows) and each level's offset."""
  b, _, _, channels = levels[0].shape
  flats, offsets, start = [], [], 0
  for level in levels:
    _, h, w, _ = level.shape
    offsets.append(start)
    flats.append(level.reshape(b * h * w, channels))
    start += b * h * w
  # Taps that carry no weight may address one row past a level's end: keep them in bounds.
  pad = levels[0].shape[2] + 2
  flats.append(jnp.zeros((pad, channels), levels[0].dtype))
  return jnp.concatenate(flats, axis=0), np.asarray(offsets, np.int64)


def _level_taps(coord, size):
  """Per-pixel patch start and the two cells' weights along one axis, for per-pixel `size`.

  Like `taps.axis_taps` (zero weight for taps outside the level), with the level's size varying
  per pixel.
  """
  floor = jnp.floor(coord)
  frac = coord - floor
  first = floor.astype(jnp.int32)
  start = jnp.clip(first, 0, jnp.maximum(size - 2, 0))
  offset = first - start
  zero = jnp.zeros_like(frac)
  weight0 = jnp.where(offset == 0, 1.0 - frac, jnp.where(offset == -1, frac, zero))
  weight1 = jnp.where(offset == 0, frac, jnp.where(offset == 1, 1.0 - frac, zero))
  weight1 = jnp.where(start + 1 < size, weight1, zero)
  return start, weight0, weight1


def _read_level(atlas, tables, level, x0, y0, batch):
  """Bilinear read of pyramid `level [B, h, w]` (int) at level-0 pixel coordinates `x0, y0`."""
  offsets, heights, widths, inverse_scale = (jnp.take(t, level) for t in tables)
  # Level pixel k covers level-0 pixels [k s, (k + 1) s), s = 2^level: its centre is
  # (k + 0.5) s - 0.5.
  x = (x0 + 0.5) * inverse_scale - 0.5
  y = (y0 + 0.5) * inverse_scale - 0.5
  row, wy0, wy1 = _level_taps(y, heights)
  col, wx0, wx1 = _level_taps(x, widths)
  pixel = offsets + batch * (heights * widths) + row * widths + col
  dims = jax.lax.GatherDimensionNumbers(offset_dims=(3,), collapsed_slice_dims=(0,),
                                        start_index_map=(0,))
  channels = atlas.shape[-1]

  def read(delta):
    return jax.lax.gather(atlas, (pixel + delta)[..., None], dims, slice_sizes=(1, channels),
                          mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS).astype(jnp.float32)

  return (wy0[..., None] * (wx0[..., None] * read(0) + wx1[..., None] * read(1))
          + wy1[..., None] * (wx0[..., None] * read(widths) + wx1[..., None] * read(widths + 1)))


def _footprint_level(x0, y0, levels):
  """`lam [B, h, w]`: log2 of the footprint's size in source pixels, in [0, levels - 1]."""
  _, h, w = x0.shape
  grid = jnp.stack([x0, y0], axis=-1)
  # Derivatives per output pixel (the helper's normalised units times the node spacing).
  xu, xv, yu, yv = local_magnification.normalised_jacobian(grid)
  xu, yu = xu * (2.0 / max(w - 1, 1)), yu * (2.0 / max(w - 1, 1))
  xv, yv = xv * (2.0 / max(h - 1, 1)), yv * (2.0 / max(h - 1, 1))
  # The root mean square of the two sides: smooth (the longer side's maximum has a kink, and so
  # an ill-defined gradient, at every isotropic footprint), and within sqrt(2) of the longer side.
  side2 = 0.5 * (xu * xu + yu * yu + xv * xv + yv * yv)
  # 0.5 log2(max(rho^2, 1)): no square root (whose gradient is infinite at a flat grid).
  lam = 0.5 * jnp.log2(jnp.maximum(side2, 1.0))
  return jnp.clip(lam, 0.0, levels - 1.0)


def _written(a, b):
  """`a, b [B, h, w]` materialised (see `fusion.materialised`)."""
  both = fusion.materialised(jnp.stack([a, b], axis=-1))
  return both[..., 0], both[..., 1]


def _read_image(image, x0, y0):
  """Plain bilinear read of level 0 (the image) with `grid_sample`'s taps."""
  height, width = image.shape[1:3]
  row, wy, _ = taps.axis_taps(y0, height)
  col, wx, _ = taps.axis_taps(x0, width)
  return taps.interpolate(taps.gather_taps(image, row, col, len(wy), len(wx)), wy, wx)


@functools.partial(jax.jit, static_argnames=("align_corners", "padding_mode"))
def antialiased_sample(image, grid, align_corners, padding_mode):
  """Anti-aliased `grid_sample` (arguments checked by `grid_sample`); float32 output.

  On the CPU, with `native`'s kernels built, the forward value comes from its fused kernel (the
  same numbers to float32 rounding, about 3x faster); gradients are always this module's XLA
  formulation's, which then also computes the value (so that its residuals are saved).
  """
  grid = grid.astype(jnp.float32)
  if image.dtype not in (jnp.uint8, jnp.float32):  # The dtypes the kernel reads.
    return _xla_sample(image, grid, align_corners, padding_mode)
  return _fused_sample(image, grid, align_corners, padding_mode)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _fused_sample(image, grid, align_corners, padding_mode):
  xla = functools.partial(_xla_sample, align_corners=align_corners, padding_mode=padding_mode)
  fused = functools.partial(native.antialiased_sample, align_corners=align_corners,
                            padding_mode=padding_mode)
  return native.dispatch(fused, xla, image, grid)


def _fused_sample_fwd(image, grid, align_corners, padding_mode):
  # symbolic_zeros=True: `.perturbed` says whether the image is differentiated at all.
  differentiate_image = image.perturbed and jnp.issubdtype(image.value.dtype, jnp.floating)
  image, grid = image.value, grid.value
  if differentiate_image:
    out, pullback = jax.vjp(
        lambda im, gr: _xla_sample(im, gr, align_corners, padding_mode), image, grid)
  else:
    out, pullback = jax.vjp(
        lambda gr: _xla_sample(image, gr, align_corners, padding_mode), grid)
  return out, pullback


def _fused_sample_bwd(align_corners, padding_mode, pullback, g):
  del align_corners, padding_mode
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    g = jnp.zeros(g.shape, g.dtype)
  cotangents = tuple(pullback(g))
  return cotangents if len(cotangents) == 2 else (None,) + cotangents  # (image, grid)


_fused_sample.defvjp(_fused_sample_fwd, _fused_sample_bwd, symbolic_zeros=True)


def _xla_sample(image, grid, align_corners, padding_mode):
  """The anti-aliased sampling in XLA operations (the module docstring's algorithm)."""
  b, height, width, _ = image.shape
  _, h, w, _ = grid.shape
  grid = grid.astype(jnp.float32)
  x0 = taps.source_coordinate(grid[..., 0], width, align_corners, padding_mode)
  y0 = taps.source_coordinate(grid[..., 1], height, align_corners, padding_mode)
  read_0 = _read_image(image, x0, y0)
  shapes = level_shapes(height, width)
  if len(shapes) == 1 or h < 2 or w < 2:
    return read_0  # A single pixel, or no footprint to measure: plain bilinear.
  # The footprint from the unpadded coordinates: padding folds positions, not footprints.
  if align_corners:
    fx, fy = (grid[..., 0] + 1) / 2 * (width - 1), (grid[..., 1] + 1) / 2 * (height - 1)
  else:
    fx, fy = ((grid[..., 0] + 1) * width - 1) / 2, ((grid[..., 1] + 1) * height - 1) / 2
  lam = _footprint_level(fx, fy, len(shapes))
  # Written out once: XLA:CPU would otherwise recompute the footprint (and the coordinates)
  # inside each of the reads' index computations.
  lam, _ = _written(lam, lam)
  x0, y0 = _written(x0, y0)
  low = jnp.floor(lam)
  frac = (lam - low)[..., None]
  low = low.astype(jnp.int32)
  atlas, offsets = _atlas(_pyramid(image))
  sizes = np.asarray(shapes, np.int64)
  # Tables indexed by level (level 0 unused: it is read from the image itself).
  tables = (jnp.asarray(np.concatenate([[0], offsets]), jnp.int32),
            jnp.asarray(sizes[:, 0], jnp.int32), jnp.asarray(sizes[:, 1], jnp.int32),
            jnp.asarray(0.5 ** np.arange(len(shapes)), jnp.float32))
  batch = jnp.arange(b, dtype=jnp.int32)[:, None, None]
  # Levels max(low, 1) and low + 1 from the atlas; where low is 0 they coincide (level 1), and
  # the blend is between the image and level 1.
  read_a = _read_level(atlas, tables, jnp.maximum(low, 1), x0, y0, batch)
  read_b = _read_level(atlas, tables, jnp.minimum(low + 1, len(shapes) - 1), x0, y0, batch)
  on_image = (low == 0)[..., None]
  return jnp.where(on_image, read_0 + frac * (read_a - read_0), read_a + frac * (read_b - read_a))
