"""The sampling grid of the saliency sampler: Gaussian attraction (Eqs. 2-3 of the paper).

Every cell of a saliency map pulls the sampling positions around it with a force proportional to
its weight. With a Gaussian kernel `k` the sampling position of grid cell `(a, b)` is the
`k`-weighted centre of mass of the saliency around it:

    u(a, b) = sum_ij k(a - i, b - j) S(i, j) x(j) / sum_ij k(a - i, b - j) S(i, j),

and the same with `y(i)` for `v`. As in the authors' code the map is first padded by `padding`
cells (replicating its border by default, which removes the pull towards the image centre),
coordinates run `(j - padding) / (gw - 1)` so the interior spans 0..1, the kernel is
`exp(-4 ln2 r^2 / fwhm^2)` on a `(2 padding + 1)^2` window, the grid is `clip(2u - 1, -1, 1)` and is
finally upsampled bilinearly (half-pixel convention) to the output size.

Coordinates follow `torch.nn.functional.grid_sample`: the last axis of the grid is `(x, y)` =
(column, row), both in `[-1, 1]`.

Three ways to compute the same numbers (they agree to float32 rounding on ordinary maps):
- "dense": the literal formula, three 2-D correlations with the `(2p+1)^2` kernel; the reference.
- "separable": the kernel is a product of 1-D Gaussians and `x` depends only on the column, `y`
  only on the row, so padding, the kernel and the coordinate weights fold into two small constant
  matrices per axis; the whole grid is a few `[g, g]` matrix products. The default and the fastest.
- "fft": the correlations by FFT. Its rounding error is relative to the map's total mass, so it
  is only as accurate as the others for maps without a huge dynamic range; kept for very large grids.

`axis_aligned=True` is another grid (LZU's and FOVEA's): each axis from the 1-D attraction of the
saliency's marginal on that axis, so that rows and columns stay straight and the warp inverts
exactly (`invert_grid(..., axis_aligned=True)`).

Degenerate maps: the saliency is rescaled by its maximum (the grid is invariant to the scale, so
this changes nothing but protects against underflow), and a uniform floor of 1e-30 of that maximum
is added. The floor is far below float32 rounding for any map a softmax produces, and it defines
what the formula leaves undefined: an all-zero map, or a region out of the kernel's reach of any
mass, gets the identity (uniform) grid instead of 0/0.
"""

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import fusion
from saliency_jax.ops import local_magnification
from saliency_jax.ops import resize
from saliency_jax.ops import sharding
from saliency_jax.ops import validation

METHODS = ("dense", "separable", "fft")
PAD_MODES = ("edge", "reflect", "none")
_HIGHEST = jax.lax.Precision.HIGHEST
# How the grid is upsampled to the output size, per backend (jax.default_backend()): from the two
# neighbours of each output row ("two_taps", measured ~4x faster than the matrices on CPU; GPUs
# gather cheaply too), or as interpolation matrices where gathers are slow and matrix products
# fast (TPU). The two agree to float32 rounding.
_UPSAMPLING = {"tpu": "matrices"}
# Relative to the map's maximum; see the module docstring.
_FLOOR = 1e-30


def gaussian_kernel_1d(fwhm: float, radius: int) -> np.ndarray:
  """`exp(-4 ln2 d^2 / fwhm^2)` for `d = -radius..radius`: peak 1, not normalised."""
  d = np.arange(-radius, radius + 1, dtype=np.float64)
  return np.exp(-4.0 * np.log(2.0) * d**2 / fwhm**2)


def pad_indices(size: int, padding: int, pad_mode: str) -> np.ndarray:
  """Source index of each of the `size + 2 padding` padded cells, or -1 for a zero cell."""
  i = np.arange(-padding, size + padding)
  if pad_mode == "edge":
    return np.clip(i, 0, size - 1)
  if pad_mode == "reflect":
    if size == 1:
      return np.zeros_like(i)
    period = 2 * (size - 1)
    i = np.mod(i, period)
    return np.where(i < size, i, period - i)
  return np.where((i >= 0) & (i < size), i, -1)


@functools.lru_cache(maxsize=64)
def _separable_matrices(size: int, padding: int, fwhm: float, pad_mode: str) -> np.ndarray:
  """`[2, size, size]`: the kernel, and the kernel times the coordinate, with padding folded in.

  Row `a` of the first matrix holds, for every source cell, the total kernel weight that output
  cell `a` gives it through the padded map; the second also multiplies by the padded cell's
  coordinate. Applied along one axis they give the denominator and that axis' numerator.
  """
  kernel = gaussian_kernel_1d(fwhm, padding)
  padded = size + 2 * padding
  coords = (np.arange(padded) - padding) / (size - 1)
  source = pad_indices(size, padding, pad_mode)
  matrices = np.zeros((2, size, size), np.float64)
  for a in range(size):
    for t in range(2 * padding + 1):
      i = a + t  # Padded cell under kernel tap t of output cell a (a 'valid' correlation).
      if source[i] >= 0:
        matrices[0, a, source[i]] += kernel[t]
        matrices[1, a, source[i]] += kernel[t] * coords[i]
  return matrices


def _normalise(saliency: jax.Array) -> jax.Array:
  # Negative weights have no meaning as attraction; under jit (where they cannot be refused)
  # they count as zero. `s < 0` is False for NaN, which therefore still propagates.
  saliency = jnp.where(saliency < 0, 0.0, saliency)
  # u and v are invariant to the map's scale, so dividing by a constant maximum changes nothing
  # mathematically (the gradient through the stopped maximum is exactly zero) while keeping every
  # weight in [0, 1]; see the module docstring for the floor.
  peak = jax.lax.stop_gradient(jnp.max(saliency, axis=(1, 2), keepdims=True))
  # The grid's gradient scales as 1 / (the map's mass): at an all-zero map it would be that of
  # the floor alone (~1e30). There the map is taken as the constant floor, whose gradient is zero
  # (`saliency * 0` rather than 0, so that a NaN peak still gives NaN).
  scaled = jnp.where(peak > 0, saliency / jnp.where(peak > 0, peak, 1.0), saliency * 0.0)
  return scaled + _FLOOR


def _moments_separable(saliency, padding, fwhm, pad_mode):
  _, gh, gw = saliency.shape
  rows = jnp.asarray(_separable_matrices(gh, padding, fwhm, pad_mode), jnp.float32)
  cols = jnp.asarray(_separable_matrices(gw, padding, fwhm, pad_mode), jnp.float32)
  # [B, 2, gh, gw] after the rows: (kernel, kernel * y); then the columns: (kernel, kernel * x).
  by_rows = jnp.einsum("kai,bij->bkaj", rows, saliency, precision=_HIGHEST)
  den = jnp.einsum("baj,cj->bac", by_rows[:, 0], cols[0], precision=_HIGHEST)
  num_x = jnp.einsum("baj,cj->bac", by_rows[:, 0], cols[1], precision=_HIGHEST)
  num_y = jnp.einsum("baj,cj->bac", by_rows[:, 1], cols[0], precision=_HIGHEST)
  return den, num_x, num_y


def _padded_with_basis(saliency, padding, pad_mode):
  """`[B, gh + 2p, gw + 2p, 3]`: the padded map S, x S and y S."""
  _, gh, gw = saliency.shape
  mode = {"edge": "edge", "reflect": "reflect", "none": "constant"}[pad_mode]
  padded = jnp.pad(saliency, ((0, 0), (padding, padding), (padding, padding)), mode=mode)
  x = (jnp.arange(gw + 2 * padding, dtype=jnp.float32) - padding) / (gw - 1)
  y = (jnp.arange(gh + 2 * padding, dtype=jnp.float32) - padding) / (gh - 1)
  return jnp.stack([padded, padded * x[None, None, :], padded * y[None, :, None]], axis=-1)


def _moments_dense(saliency, padding, fwhm, pad_mode):
  g = jnp.asarray(gaussian_kernel_1d(fwhm, padding), jnp.float32)
  kernel = (g[:, None] * g[None, :])[:, :, None, None]  # HWIO, one input and output channel.
  stacked = _padded_with_basis(saliency, padding, pad_mode)
  b, hp, wp, _ = stacked.shape
  # The three maps go through the same single-channel correlation as separate batch entries.
  maps = jnp.moveaxis(stacked, -1, 1).reshape(b * 3, hp, wp, 1)
  out = jax.lax.conv_general_dilated(
      maps, kernel, window_strides=(1, 1), padding="VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST)
  out = out.reshape(b, 3, *out.shape[1:3])
  return out[:, 0], out[:, 1], out[:, 2]


def _moments_fft(saliency, padding, fwhm, pad_mode):
  g = jnp.asarray(gaussian_kernel_1d(fwhm, padding), jnp.float32)
  kernel = g[:, None] * g[None, :]
  stacked = jnp.moveaxis(_padded_with_basis(saliency, padding, pad_mode), -1, 1)
  _, _, hp, wp = stacked.shape
  k = 2 * padding + 1
  size = (hp + k - 1, wp + k - 1)
  # The kernel is symmetric, so correlation equals convolution; the 'valid' part of the full
  # linear convolution starts at k - 1.
  spectrum = jnp.fft.rfft2(stacked, s=size) * jnp.fft.rfft2(kernel, s=size)
  full = jnp.fft.irfft2(spectrum, s=size)
  out = full[:, :, k - 1:hp, k - 1:wp]
  return out[:, 0], out[:, 1], out[:, 2]


_MOMENTS = {"dense": _moments_dense, "separable": _moments_separable, "fft": _moments_fft}


@jax.custom_jvp
def _centre_of_mass(num: jax.Array, den: jax.Array) -> jax.Array:
  return num / den


@_centre_of_mass.defjvp
def _centre_of_mass_jvp(primals, tangents):
  # d(n / d) = (dn - (n / d) dd) / d. The quotient rule's 1 / d^2 would overflow float32 where
  # the denominator is tiny (mass far from a cell), turning finite gradients into inf - inf.
  num, den = primals
  d_num, d_den = tangents
  ratio = num / den
  return ratio, (d_num - ratio * d_den) / den


def _output_identity(size: int, align_corners: bool) -> np.ndarray:
  """`[size]` the normalised positions of `size` output pixels under `grid_sample`'s convention:
  what a grid must hold to sample a uniform image exactly."""
  if align_corners:
    return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)
  return -1.0 + (2.0 * np.arange(size) + 1.0) / size


def _planes(xs: np.ndarray, ys: np.ndarray, count: int) -> jax.Array:
  """`[2 count, len(ys), len(xs)]`: `count` planes of `xs` along the columns, then `count` of `ys`
  along the rows (the x and y planes of `count` grids)."""
  shape = (count, len(ys), len(xs))
  return jnp.asarray(np.concatenate([np.broadcast_to(xs[None, None, :], shape),
                                     np.broadcast_to(ys[None, :, None], shape)]), jnp.float32)


def _upsampled(coarse, out_shape, upsampling, align_corners):
  """`[2B, gh, gw]` node positions (all x planes, then all y) -> `[2B, h, w]`, bilinear with the
  half-pixel convention.

  `align_corners` None: the authors' upsampling of the positions themselves. True or False: the
  displacement from the nodes' uniform lattice is upsampled and added to the output pixels' own
  positions under that convention (`_output_identity`), so that a uniform map gives that
  identity exactly.
  """
  count, (gh, gw) = coarse.shape[0] // 2, coarse.shape[1:]
  if align_corners is not None:
    coarse = coarse - _planes(np.linspace(-1.0, 1.0, gw), np.linspace(-1.0, 1.0, gh), count)
  if upsampling == "matrices":
    fine = resize.resize_planes(
        coarse, resize.bilinear_matrix(gh, out_shape[0]), resize.bilinear_matrix(gw, out_shape[1]))
  else:
    fine = resize.interpolate_planes(coarse, out_shape)
  if align_corners is None:
    return fine
  h, w = out_shape
  identity = _planes(_output_identity(w, align_corners), _output_identity(h, align_corners), count)
  return jnp.clip(fine + identity, -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("out_shape", "fwhm", "padding", "pad_mode", "method",
                                             "upsampling", "align_corners"))
def _attraction_grid(saliency, out_shape, fwhm, padding, pad_mode, method, upsampling,
                     align_corners):
  saliency = _normalise(saliency.astype(jnp.float32))
  den, num_x, num_y = _MOMENTS[method](saliency, padding, fwhm, pad_mode)
  if method == "fft":
    # FFT rounding can leave the smallest denominators at or below zero; the floor's own
    # contribution is a safe lower bound for the exact value.
    den = jnp.maximum(den, _FLOOR)
  coarse = jnp.concatenate([_centre_of_mass(num_x, den), _centre_of_mass(num_y, den)])
  coarse = jnp.clip(2.0 * coarse - 1.0, -1.0, 1.0)  # [2B, gh, gw]: all x planes, then all y.
  b = den.shape[0]
  fine = _upsampled(coarse, out_shape, upsampling, align_corners)
  grid = jnp.stack([fine[:b], fine[b:]], axis=-1)
  # The matrix products already end XLA's fusion; the two-tap rows would fuse into the sampler.
  return grid if upsampling == "matrices" else fusion.materialised(grid)


def _axis_attraction(marginal, out_size, fwhm, padding, pad_mode, align_corners):
  """`[B, g]` marginal -> `[B, out_size]` coordinates in [-1, 1] along that axis."""
  size = marginal.shape[-1]
  matrices = jnp.asarray(_separable_matrices(size, padding, fwhm, pad_mode), jnp.float32)
  den = jnp.einsum("ai,bi->ba", matrices[0], marginal, precision=_HIGHEST)
  num = jnp.einsum("ai,bi->ba", matrices[1], marginal, precision=_HIGHEST)
  coarse = jnp.clip(2.0 * _centre_of_mass(num, den) - 1.0, -1.0, 1.0)
  # The same upsampling as the 2-D grid's (`_upsampled`).
  if align_corners is not None:
    coarse = coarse - jnp.asarray(np.linspace(-1.0, 1.0, size), jnp.float32)
  up = jnp.asarray(resize.bilinear_matrix(size, out_size), jnp.float32)
  fine = jnp.einsum("oi,bi->bo", up, coarse, precision=_HIGHEST)
  if align_corners is None:
    return fine
  return jnp.clip(fine + jnp.asarray(_output_identity(out_size, align_corners), jnp.float32),
                  -1.0, 1.0)


@functools.partial(jax.jit, static_argnames=("out_shape", "fwhm", "padding", "pad_mode",
                                             "align_corners"))
def _axis_aligned_grid(saliency, out_shape, fwhm, padding, pad_mode, align_corners):
  """The axis-aligned variant (LZU, FOVEA): `x` from the column marginal `sum_i S(i, j)`, `y`
  from the row marginal `sum_j S(i, j)`, each the 1-D attraction of Eqs. 2-3 with the same
  kernel, padding and coordinates. `x` depends only on the column and `y` only on the row, so
  rows and columns stay straight, and the grid is monotone (a Gaussian-weighted centre of mass
  moves with its window): `invert_grid(..., axis_aligned=True)` inverts it exactly. Not to be
  confused with `method="separable"`, which computes the ordinary 2-D attraction."""
  saliency = _normalise(saliency.astype(jnp.float32))
  b = saliency.shape[0]
  h, w = out_shape
  x = _axis_attraction(jnp.sum(saliency, axis=1), w, fwhm, padding, pad_mode, align_corners)
  y = _axis_attraction(jnp.sum(saliency, axis=2), h, fwhm, padding, pad_mode, align_corners)
  return jnp.stack([jnp.broadcast_to(x[:, None, :], (b, h, w)),
                    jnp.broadcast_to(y[:, :, None], (b, h, w))], axis=-1)


def attraction_grid(
    saliency: jax.Array,
    out_shape: Sequence[int],
    *,
    fwhm: float = 13.0,
    padding: int = 30,
    pad_mode: str = "edge",
    method: str = "separable",
    axis_aligned: bool = False,
    max_magnification: float | None = None,
    align_corners: bool | None = None,
) -> jax.Array:
  """The saliency sampler's sampling grid from a saliency map (Eqs. 2-3 of the paper).

  Args:
    saliency: `[B, gh, gw]` non-negative weights (a softmax output, or any positive scale), with
      `gh, gw >= 2`. Only relative weights matter. An all-zero map gives the identity grid, with
      a zero gradient.
    out_shape: `(h, w)` of the grid to return (the task network's input size).
    fwhm: full width at half maximum of the Gaussian kernel, in saliency cells (the authors' 13).
    padding: cells of padding on each side of the map; also the kernel radius (window
      `2 padding + 1`). The authors use 30 for a 31x31 map.
    pad_mode: "edge" (replicate the border, as the authors), "reflect", or "none" (no mass outside
      the map, which pulls samples towards the centre, as the paper notes).
    method: "separable" (default), "dense" (the literal 2-D correlation) or "fft"; see the module
      docstring.
    axis_aligned: True: the axis-aligned variant of LZU / FOVEA instead of the 2-D attraction,
      `x` from the column marginal of the map and `y` from the row marginal, each a 1-D Gaussian
      attraction (see `_axis_aligned_grid`; `method` does not apply). The grid is monotone
      and exactly invertible by `invert_grid(..., axis_aligned=True)`.
    max_magnification: None (no cap) or a cap, at least 1, on the grid's local linear
      magnification relative to uniform sampling (`magnification(grid, None)`): the grid is
      blended with the uniform grid by the smallest per-image weight that meets it (see
      `local_magnification.cap_magnification`), differentiably.
    align_corners: None (the authors): the grid's nodes are upsampled with the half-pixel
      convention, so that a uniform map gives the identity only roughly (about `h / (2 gh)`
      border pixels clamped to the edge, the interior stretched by `gh / (gh - 1)`: at 2x
      downsampling the samples drift across the source pixels and alias). True or False: the
      grid for `grid_sample` with that convention, built as the output pixels' own positions
      plus the upsampled displacement of the nodes, so that a uniform map gives exactly the
      identity: the sampler at a uniform map is then uniform downsampling. (The cap still
      blends towards the align_corners=True identity.)

  Returns:
    `[B, h, w, 2]` float32 grid of `(x, y)` sampling positions in `[-1, 1]`, for `grid_sample`.
    Under `jit` (where values cannot be checked), NaN in an image's map gives NaN in that image's
    grid, and negative weights count as zero (with zero gradient).

  Raises:
    ValueError: on a bad shape or option, a `max_magnification` below 1, or, when called
      outside `jit`, on a map holding NaN, infinity or negative weights.
  """
  if not hasattr(saliency, "ndim"):
    saliency = jnp.asarray(saliency)
  if saliency.ndim != 3:
    raise ValueError(f"saliency must have shape [batch, grid_height, grid_width]; got shape "
                     f"{saliency.shape}.")
  if saliency.shape[1] < 2 or saliency.shape[2] < 2:
    raise ValueError(f"saliency needs at least 2x2 cells (coordinates run (j - padding) / "
                     f"(width - 1)); got shape {saliency.shape}.")
  if not (jnp.issubdtype(saliency.dtype, jnp.floating)
          or jnp.issubdtype(saliency.dtype, jnp.integer)):
    raise ValueError(f"saliency must be a real array; got dtype {saliency.dtype}.")
  out_shape = validation.check_shape(out_shape, "out_shape")
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
  if pad_mode not in PAD_MODES:
    raise ValueError(f"pad_mode must be one of {PAD_MODES}; got {pad_mode!r}.")
  padding = validation.check_int(padding, "padding", minimum=0)
  fwhm = validation.check_positive_number(fwhm, "fwhm")
  validation.check_finite(saliency, "saliency")
  value = validation.concrete_value(saliency)
  if value is not None and np.any(value < 0):
    raise ValueError(f"saliency must be non-negative (weights of attraction); got minimum "
                     f"{value.min()}.")
  if max_magnification is not None:
    local_magnification.check_cap(max_magnification)
  if align_corners is not None:
    align_corners = validation.check_bool(align_corners, "align_corners")
  if axis_aligned:
    grid = sharding.batch_parallel(functools.partial(
        _axis_aligned_grid, out_shape=out_shape, fwhm=fwhm, padding=padding,
        pad_mode=pad_mode, align_corners=align_corners))(saliency)
  else:
    grid = sharding.batch_parallel(functools.partial(
        _attraction_grid, out_shape=out_shape, fwhm=fwhm, padding=padding, pad_mode=pad_mode,
        method=method, upsampling=_UPSAMPLING.get(jax.default_backend(), "two_taps"),
        align_corners=align_corners))(saliency)
  if max_magnification is not None:
    grid = local_magnification.cap(grid, max_magnification)
  if axis_aligned or max_magnification is not None:
    grid = fusion.materialised(grid)
  return grid
