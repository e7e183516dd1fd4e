"""Points and boxes through a sampling grid's warp: source -> warped and warped -> source.

Conventions: points `[B, N, 2]` are normalised `(x, y)` in `[-1, 1]`; boxes `[B, N, 4]` are
`(x0, y0, x1, y1)` in the same coordinates, `x0 <= x1`, `y0 <= y1`. Source coordinates follow
the grid's values (`grid_sample`'s normalisation of the source image); warped coordinates are the
align_corners=True lattice of the grid's nodes (see `inverse`). The warp from warped to source is
the piecewise-bilinear interpolation of the grid; source to warped is its inverse.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import inverse
from saliency_jax.ops import sampling


def _check_points(points, grid, name, last):
  if not hasattr(points, "ndim"):
    points = jnp.asarray(points)
  if points.ndim != 3 or points.shape[-1] != last:
    raise ValueError(f"{name} must have shape [batch, n, {last}]; got shape {points.shape}.")
  if not jnp.issubdtype(points.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating (normalised coordinates); got dtype "
                     f"{points.dtype}.")
  if points.shape[0] != grid.shape[0]:
    raise ValueError(f"{name} and grid must have the same batch size; got {name} shape "
                     f"{points.shape} and grid shape {grid.shape}.")
  return points


@jax.jit
def _unwarp_points(points, grid):
  # The grid read as a 2-channel image at the points: exactly its piecewise-bilinear
  # interpolation on the align_corners=True lattice; border padding extends it flat beyond.
  values = sampling.grid_sample(grid.astype(jnp.float32), points.astype(jnp.float32)[:, :, None],
                                align_corners=True, padding_mode="border")
  return values[:, :, 0]


def unwarp_points(points: jax.Array, grid: jax.Array) -> jax.Array:
  """Warped -> source: where in the source each warped point reads.

  Args:
    points: `[B, N, 2]` normalised positions in the warped image (the grid's output).
    grid: `[B, h, w, 2]` the sampling grid (see `invert_grid`).

  Returns:
    `[B, N, 2]` float32 source positions: the bilinear interpolation of `grid` at the points;
    beyond the warped image the border nodes' values (the warp is not extrapolated). Gradients
    flow to the points and the grid.

  Raises:
    ValueError: on bad shapes or mismatched batches, or (outside `jit`) a grid holding NaN.
  """
  grid = inverse.check_grid(grid)
  points = _check_points(points, grid, "points", 2)
  return _unwarp_points(points, grid)


def warp_points(points: jax.Array, grid: jax.Array, *,
                axis_aligned: bool = False) -> tuple[jax.Array, jax.Array]:
  """Source -> warped: where each source point lands in the warped image (the inverse warp).

  Args:
    points: `[B, N, 2]` normalised source positions.
    grid: `[B, h, w, 2]` the sampling grid.
    axis_aligned: the fast path of `invert_grid` for axis-aligned, monotone grids.

  Returns:
    `(warped [B, N, 2] float32, covered [B, N] bool)`: the warped position whose bilinear
    interpolation of the grid gives the point (the analytic solve in the cell the walk finds; see
    `inverse`). Where no cell covers a point, `covered` is False and `warped` extrapolates the
    nearest cell's patch (so it usually lies outside `[-1, 1]`). Gradients flow to the points and
    the grid. Under `jit`, an image whose grid holds NaN gets NaN and covered False.

  Raises:
    ValueError: on bad shapes or mismatched batches, or (outside `jit`) a grid holding NaN.
  """
  grid = inverse.check_grid(grid, axis_aligned=axis_aligned)
  points = _check_points(points, grid, "points", 2)
  return inverse.invert_points(grid, points, axis_aligned=bool(axis_aligned))


def _box_corners(boxes):
  return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def _tight_box(points, n, k):
  """`points [B, n * k, 2]` (k boundary points per box) -> `[B, n, 4]` their bounding boxes."""
  b = points.shape[0]
  points = points.reshape(b, n, k, 2)
  # The extremes are gathered at their arg-extremes rather than reduced: the gradient of a
  # reduction finds the extreme by comparing the points with it again, and where XLA computes
  # the two in separate fusions, rounded apart, nothing compares equal and the gradient is 0/0.
  def pick(index):
    return jnp.take_along_axis(points, index[:, :, None], axis=2)[:, :, 0]
  low, high = pick(jnp.argmin(points, axis=2)), pick(jnp.argmax(points, axis=2))
  return jnp.concatenate([low, high], axis=-1)


@jax.jit
def _unwarp_boxes(boxes, grid):
  _, h, w, _ = grid.shape
  x0, y0, x1, y1 = _box_corners(boxes.astype(jnp.float32))
  # Within a cell, a horizontal (vertical) edge of the box maps to a straight segment: the warp is
  # linear in s for fixed t. The mapped boundary is a polygon whose vertices are the box's corners
  # and the crossings of its edges with the grid's node lines, so its bounding box is exact from
  # these points.
  lines_x = inverse.lattice(w)[None, None, :]
  lines_y = inverse.lattice(h)[None, None, :]
  xs = jnp.concatenate([x0[..., None], x1[..., None],
                        jnp.clip(lines_x, x0[..., None], x1[..., None])], axis=-1)
  ys = jnp.concatenate([y0[..., None], y1[..., None],
                        jnp.clip(lines_y, y0[..., None], y1[..., None])], axis=-1)
  horizontal = [jnp.stack([xs, jnp.broadcast_to(y[..., None], xs.shape)], -1) for y in (y0, y1)]
  vertical = [jnp.stack([jnp.broadcast_to(x[..., None], ys.shape), ys], -1) for x in (x0, x1)]
  boundary = jnp.concatenate(horizontal + vertical, axis=2)  # [B, N, K, 2]
  b, n, k, _ = boundary.shape
  mapped = _unwarp_points(boundary.reshape(b, n * k, 2), grid)
  return _tight_box(mapped, n, k)


def unwarp_boxes(boxes: jax.Array, grid: jax.Array) -> jax.Array:
  """Warped -> source: the tight box of each warped box's boundary mapped into the source.

  Exact: the mapped boundary is a polygon (the warp is linear along each box edge within a cell),
  whose vertices are the box corners and the crossings of the edges with the grid's node lines;
  the box of those `2 (w + 2) + 2 (h + 2)` points per box is returned.

  Args:
    boxes: `[B, N, 4]` `(x0, y0, x1, y1)` in the warped image's normalised coordinates.
    grid: `[B, h, w, 2]` the sampling grid.

  Returns:
    `[B, N, 4]` float32 source boxes. Beyond the warped image the warp is extended flat (as
    `unwarp_points`). Gradients flow to the boxes and the grid (through the extreme points).

  Raises:
    ValueError: on bad shapes or mismatched batches, or (outside `jit`) a grid holding NaN.
  """
  grid = inverse.check_grid(grid)
  boxes = _check_points(boxes, grid, "boxes", 4)
  return _unwarp_boxes(boxes, grid)


@functools.partial(jax.jit, static_argnames=("samples", "axis_aligned"))
def _warp_boxes(boxes, grid, samples, axis_aligned):
  x0, y0, x1, y1 = _box_corners(boxes.astype(jnp.float32))
  f = jnp.asarray(np.linspace(0.0, 1.0, samples), jnp.float32)
  xs = x0[..., None] + (x1 - x0)[..., None] * f
  ys = y0[..., None] + (y1 - y0)[..., None] * f
  horizontal = [jnp.stack([xs, jnp.broadcast_to(y[..., None], xs.shape)], -1) for y in (y0, y1)]
  vertical = [jnp.stack([jnp.broadcast_to(x[..., None], ys.shape), ys], -1) for x in (x0, x1)]
  boundary = jnp.concatenate(horizontal + vertical, axis=2)
  b, n, k, _ = boundary.shape
  warped, covered = inverse.invert_points(grid, boundary.reshape(b, n * k, 2),
                                          axis_aligned=axis_aligned)
  return _tight_box(warped, n, k), jnp.all(covered.reshape(b, n, k), axis=-1)


def warp_boxes(boxes: jax.Array, grid: jax.Array, *, samples: int = 32,
               axis_aligned: bool = False) -> tuple[jax.Array, jax.Array]:
  """Source -> warped: the tight box of each source box's boundary mapped into the warped image.

  The inverse warp bends straight lines inside a cell, so its extremes along an edge need not lie
  at the corners: each edge is sampled at `samples` evenly spaced points (corners included) and
  the box of their inverse images is returned. For axis-aligned grids the inverse is separable
  and monotone, so the corners alone give the exact box, and the result is exact.

  Args:
    boxes: `[B, N, 4]` `(x0, y0, x1, y1)` in source coordinates.
    grid: `[B, h, w, 2]` the sampling grid.
    samples: points per edge, at least 2.
    axis_aligned: the fast path of `invert_grid`.

  Returns:
    `(warped [B, N, 4] float32, covered [B, N] bool)`: `covered` is False for a box whose boundary
    leaves the area the grid covers (its box then uses the extrapolated inverse there, see
    `warp_points`). Gradients flow to the boxes and the grid.

  Raises:
    ValueError: on bad shapes, mismatched batches, `samples < 2`, or (outside `jit`) a grid
      holding NaN.
  """
  grid = inverse.check_grid(grid, axis_aligned=axis_aligned)
  boxes = _check_points(boxes, grid, "boxes", 4)
  if int(samples) != samples or samples < 2:
    raise ValueError(f"samples must be an int of at least 2; got {samples!r}.")
  return _warp_boxes(boxes, grid, int(samples), bool(axis_aligned))
