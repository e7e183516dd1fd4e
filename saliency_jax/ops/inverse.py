"""The exact inverse of a sampling grid's piecewise-bilinear warp, and unwarping feature maps.

A grid `[B, h, w, 2]` as `grid_sample` takes it defines a map from the warped image (the sampled
output) to the source: grid node `(i, j)` sits at the normalised warped position
`(-1 + 2 j / (w - 1), -1 + 2 i / (h - 1))` (the align_corners=True lattice) and maps to the
source position `grid[b, i, j] = (x, y)`; between the nodes the map is bilinear in each cell.
Its inverse takes a source position `p` to the warped position whose bilinear interpolation of
the grid gives `p`.

How the inverse is computed (fixed shapes, no data-dependent control flow):
1. A first guess per target from the 1-D inverses of the grid's mean column and row profiles
   (`x` averaged over the rows, `y` over the columns).
2. A fixed number of Newton steps on the piecewise-bilinear map ("cell walking"): each step
   solves in the patch of the cell holding the current iterate, extended beyond the cell, so an
   iterate in the wrong cell jumps towards the right one (at most `_MAX_JUMP` cells per step). In
   (nearly) singular cells, e.g. the zero-width cells that clipping leaves at a grid's border,
   the step treats the cell as one of the grid's mean size. The cell of the last step that
   landed inside its own cell is kept.
3. The differentiable solve in that cell: gradients with respect to the grid flow through it
   (the cell choice itself is discrete). For points (`warp_points`, `warp_boxes`) it is the
   analytic inverse of the cell's patch below. On a lattice (`invert_grid`, `unwarp`), where the
   cost per target matters, steps 1-2 run on a coarse lattice (two targets per grid cell and
   axis), the coarse solution is interpolated to the full lattice, and `_FINE_STEPS` Newton
   steps plus one final differentiable Newton step (whose gradient at a converged iterate is the
   implicit-function gradient, the same as the analytic solve's) finish it; the final residual,
   exactly `ds dt g` for a bilinear patch, decides coverage. On the CPU the lattice's inverse is
   `native`'s kernel (the analytic solve in each target's cell, found by a walk that misses no
   covered target), and its gradient is that implicit-function gradient written out: the
   cotangent `q = -J^-T g` at the solution, scattered to the cell's corners with bilinear
   weights.

The analytic solve. With the cell's corners `A = P(0, 0)`, `B = P(1, 0)`, `C = P(0, 1)`,
`D = P(1, 1)` (`s` along the columns, `t` along the rows),
`P(s, t) = A + s e + t f + s t g` with `e = B - A`, `f = C - A`, `g = A - B - C + D`. For a target
`p`, `q = p - A = s e + t f + s t g`; taking the 2-D cross product (`a x b = a0 b1 - a1 b0`) with
`f + s g` eliminates `t`:

    (e x g) s^2 + (e x f - q x g) s - q x f = 0,

and then `t = <q - s e, f + s g> / |f + s g|^2` (the least-squares `t` of the remaining linear
equation, exact when a solution exists). The roots are computed as `qq = -(a1 + sign(a1) sqrt(D))
/ 2`, `s1 = a0 / qq`, `s2 = qq / a2` (for `a2 s^2 + a1 s + a0`), which stays accurate when `a2` is
small; for a parallelogram (`g = 0`, so `a2 = 0`) `s1` is exactly the linear root
`q x f / e x f`. Every division is guarded on both sides of a `where` (zero-area cells,
parallelograms, a negative discriminant outside the cell), so neither values nor gradients are
NaN for finite grids. Of the two roots whose `(s, t)` reproduce the target (in a folded cell one
may not), the one closest to the unit square is taken.

A target is `covered` when the cell found contains it: its local coordinates lie in [0, 1]^2 up
to `_COVER_TOL` and the residual is below `_COVER_TOL` of the cell's size. The walk finds the
cell on grids without folds; on a folded grid, where several cells contain a target, one of them
is returned. Near a border that the grid clips flat (several nodes on the same source line, as
attraction grids have), the lattice path can miss a few targets that the point path finds: its
coarse interpolation lands in the flat cells.

The axis-aligned fast path (`axis_aligned=True`, for grids whose `x` depends only on the column
and `y` only on the row, with non-decreasing profiles, as the axis-aligned attraction grid makes)
inverts the two 1-D piecewise-linear profiles instead; it is exact for such grids. Its gradient is
taken with respect to the mean profiles (so it is spread evenly over the rows of each column and
the columns of each row, the gradient for axis-aligned perturbations of the grid).
"""

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import fusion
from saliency_jax.ops import native
from saliency_jax.ops import sampling
from saliency_jax.ops import taps
from saliency_jax.ops import validation

# A target counts as covered when its local cell coordinates are within this of [0, 1]^2.
_COVER_TOL = 1e-4
# Where invert_grid puts targets that no cell covers: outside [-1, 1] by more than one pixel
# under both align_corners conventions, so that grid_sample's zero padding reads exactly 0.
UNCOVERED = -2.0
# Cell walks before the final solve (see the module docstring).
_WALK_STEPS = 8
_MAX_JUMP = 2.0
# Full-resolution walk steps after the coarse lattice's solution is interpolated.
_FINE_STEPS = 1


def _cross(a0, a1, b0, b1):
  return a0 * b1 - a1 * b0


def _safe_div(num, den, ok, fallback):
  """`num / den` where `ok`, else `fallback`; the division never sees an unsafe `den`."""
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), fallback)


def _outside(s, t):
  """L1 distance of the local coordinates `(s, t)` to the unit square (0 inside)."""
  return (jnp.maximum(jnp.maximum(-s, s - 1.0), 0.0)
          + jnp.maximum(jnp.maximum(-t, t - 1.0), 0.0))


def _t_for(s, qx, qy, ex, ey, fx, fy, gx, gy):
  hx, hy = fx + s * gx, fy + s * gy
  den = hx * hx + hy * hy
  num = (qx - s * ex) * hx + (qy - s * ey) * hy
  scale = ex * ex + ey * ey + fx * fx + fy * fy
  return _safe_div(num, den, den > 1e-12 * scale + 1e-30, 0.0)


def solve_cell(corners, px, py):
  """Local coordinates `(s, t)` of target `(px, py)` in the bilinear patch of `corners`.

  Args:
    corners: tuple of 8 arrays `(Ax, Ay, Bx, By, Cx, Cy, Dx, Dy)`, the cell's corners (see the
      module docstring), broadcastable with `px`, `py`.
    px, py: the target's coordinates.

  Returns:
    `(s, t, outside)`: the root closest to the unit square of the extended patch, and its L1
    distance to the square (0 when the cell contains the target). Finite for finite input.
  """
  ax, ay, bx, by, cx, cy, dx, dy = corners
  ex, ey = bx - ax, by - ay
  fx, fy = cx - ax, cy - ay
  gx, gy = ax - bx - cx + dx, ay - by - cy + dy
  qx, qy = px - ax, py - ay
  a2 = _cross(ex, ey, gx, gy)
  a1 = _cross(ex, ey, fx, fy) - _cross(qx, qy, gx, gy)
  a0 = -_cross(qx, qy, fx, fy)
  disc = a1 * a1 - 4.0 * a2 * a0
  positive = disc > 0
  root = jnp.where(positive, jnp.sqrt(jnp.where(positive, disc, 1.0)), 0.0)
  qq = -0.5 * (a1 + jnp.where(a1 >= 0, root, -root))
  scale = ex * ex + ey * ey + fx * fx + fy * fy + 1e-30
  # s1 = a0 / qq is the root that stays bounded as a2 -> 0 (the linear case); s2 = qq / a2 is
  # the one that runs off to infinity then, and is only formed where it stays below ~1e6.
  s1 = _safe_div(a0, qq, jnp.abs(qq) > 1e-12 * scale, 0.0)
  s2 = _safe_div(qq, a2, jnp.abs(a2) > 1e-6 * jnp.abs(qq), 1e6)
  t1 = _t_for(s1, qx, qy, ex, ey, fx, fy, gx, gy)
  t2 = _t_for(s2, qx, qy, ex, ey, fx, fy, gx, gy)
  d1, d2 = _outside(s1, t1), _outside(s2, t2)
  # A root counts only where its (s, t) reproduces the target: degenerate cells (zero width)
  # have no solution off their segment, though the roots' fallbacks may lie in the square, and
  # in a folded cell the least-squares t of one root may miss while the other root's fits.
  tol = _residual_tol(corners)
  fits1, fits2 = (
      jax.lax.stop_gradient(jnp.abs(qx - s * ex - t * fx - s * t * gx)
                            + jnp.abs(qy - s * ey - t * fy - s * t * gy)) <= tol
      for s, t in ((s1, t1), (s2, t2)))
  d1, d2 = jnp.where(fits1, d1, jnp.inf), jnp.where(fits2, d2, jnp.inf)
  # Neither fits: the root closer to the square, as an extrapolation (flagged by inf).
  first = jnp.where(fits1 | fits2, d1 <= d2, _outside(s1, t1) <= _outside(s2, t2))
  s, t = jnp.where(first, s1, s2), jnp.where(first, t1, t2)
  return s, t, jnp.where(first, d1, d2)


def _residual_tol(corners):
  """What counts as zero residual in a cell: `_COVER_TOL` of its size, plus float rounding."""
  ax, ay, bx, by, cx, cy, _, _ = corners
  size = jnp.abs(bx - ax) + jnp.abs(by - ay) + jnp.abs(cx - ax) + jnp.abs(cy - ay)
  return jax.lax.stop_gradient(_COVER_TOL * size + 1e-6)


def _cell_table(grid):
  """`[B * (h - 1) * (w - 1), 8]`: each cell's corners A, B, C, D, as `solve_cell` takes them."""
  a = grid[:, :-1, :-1]
  b = grid[:, :-1, 1:]
  c = grid[:, 1:, :-1]
  d = grid[:, 1:, 1:]
  table = jnp.concatenate([a, b, c, d], axis=-1)
  return table.reshape(-1, 8)


def _cell_of(x, y, cells_h, cells_w):
  """The cell (clamped into the grid) holding the node coordinates `x, y`, and the local ones."""
  # nan_to_num: a NaN grid must still give in-bounds cell indices (its results are NaN anyway).
  col = jnp.clip(jnp.nan_to_num(jnp.floor(x)), 0, cells_w - 1)
  row = jnp.clip(jnp.nan_to_num(jnp.floor(y)), 0, cells_h - 1)
  return row, col, x - col, y - row


def _corners(table, first_cell, row, col, cells_w):
  """The 8 corner values `(Ax, Ay, ..., Dy)` of cell `(row, col)` of each target.

  `table` is a cell table (`_cell_table`: one gather of 8 floats per target) or, for grids with
  more cells than targets, where building the table would cost more than it saves, the grid's
  nodes `[B * h * w, 2]` (four gathers of 2 floats); `first_cell` is the image's first entry.
  """
  dims = lambda nd: jax.lax.GatherDimensionNumbers(
      offset_dims=(nd,), collapsed_slice_dims=(0,), start_index_map=(0,))
  row, col = row.astype(jnp.int32), col.astype(jnp.int32)
  if table.shape[-1] == 8:
    cell = first_cell + row * cells_w + col
    # The cell indices are clamped into the table by _cell_of.
    values = jax.lax.gather(table, cell[..., None], dims(cell.ndim), slice_sizes=(1, 8),
                            mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    return tuple(values[..., k] for k in range(8))
  node = first_cell + row * (cells_w + 1) + col
  corners = []
  for offset in (0, 1, cells_w + 1, cells_w + 2):
    value = jax.lax.gather(table, (node + offset)[..., None], dims(node.ndim), slice_sizes=(1, 2),
                           mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    corners += [value[..., 0], value[..., 1]]
  return tuple(corners)


def _patch_jacobian(corners, s, t):
  """The cell's bilinear patch `A + s e + t f + s t g` at local `(s, t)`.

  Returns its vectors `(ex, ey, fx, fy, gx, gy)`, its Jacobian `(j00, j01, j10, j11)` (rows x,
  y; columns s, t), the Jacobian's determinant, and whether that is regular (not zero to
  rounding against the cell's size).
  """
  ax, ay, bx, by, cx, cy, dx, dy = corners
  ex, ey = bx - ax, by - ay
  fx, fy = cx - ax, cy - ay
  gx, gy = ax - bx - cx + dx, ay - by - cy + dy
  j00, j01 = ex + t * gx, fx + s * gx
  j10, j11 = ey + t * gy, fy + s * gy
  det = j00 * j11 - j01 * j10
  regular = jnp.abs(det) > 1e-10 * (ex * ex + ey * ey + fx * fx + fy * fy) + 1e-30
  return (ex, ey, fx, fy, gx, gy), (j00, j01, j10, j11), det, regular


def _newton_update(corners, s, t, px, py, spacing=None):
  """One Newton step on the cell's (extended) bilinear patch: the new local `(s, t)`.

  Where the patch's Jacobian is (nearly) singular, e.g. in the zero-width cells that clipping
  leaves at a grid's border, Newton's step is undefined; with `spacing` (the grid's mean cell
  size `(sx, sy)`) the step there treats the cell as a uniform one of that size, clipped to one
  cell, which keeps a walk moving towards the target on monotone grids; without it the step is
  zero. Divisions are guarded on both sides of the `where`, so gradients stay finite.
  """
  ax, ay = corners[:2]
  (ex, ey, fx, fy, gx, gy), (j00, j01, j10, j11), det, regular = _patch_jacobian(corners, s, t)
  rx = ax + s * ex + t * fx + s * t * gx - px
  ry = ay + s * ey + t * fy + s * t * gy - py
  if spacing is None:
    ok = regular
  else:
    sx, sy = spacing
    # Cells a thousand times smaller in area than the mean still count as regular (a strong
    # zoom makes small cells); clipped borders make exactly flat ones.
    ok = jnp.abs(det) > 1e-4 * jnp.abs(sx * sy)
  inv = _safe_div(1.0, det, ok, 0.0)
  new_s = s - (j11 * rx - j01 * ry) * inv
  new_t = t - (j00 * ry - j10 * rx) * inv
  if spacing is not None:
    new_s = jnp.where(ok, new_s, s - jnp.clip(_safe_div(rx, sx, sx != 0, 0.0), -1.0, 1.0))
    new_t = jnp.where(ok, new_t, t - jnp.clip(_safe_div(ry, sy, sy != 0, 0.0), -1.0, 1.0))
  # The patch is bilinear, so the residual after a Newton step is exactly its second-order
  # term ds dt g; where no step was taken it is the old residual.
  ds_dt = jax.lax.stop_gradient((new_s - s) * (new_t - t))
  residual = jnp.where(ok, jnp.abs(ds_dt) * (jnp.abs(gx) + jnp.abs(gy)),
                       jnp.abs(rx) + jnp.abs(ry))
  return new_s, new_t, jax.lax.stop_gradient(residual)


def _walk(table, first_cell, x, y, px, py, shape, steps, spacing):
  """`steps` Newton steps on the piecewise-bilinear map, in node coordinates `x, y`.

  Each step solves in the patch of the cell that holds the current iterate, extended beyond the
  cell, so that an iterate in the wrong cell jumps towards the right one. The iterates are kept
  within half a cell of the grid. Returns the last iterate and the cell `(row, col)` whose step
  landed closest to (or in) that cell, the one the final solve uses. A `fori_loop`, so that each
  step's iterate is written once rather than recomputed inside every gather of the next step.
  """
  cells_h, cells_w = shape

  def step(_, carry):
    x, y, best_row, best_col, best = carry
    row, col, s, t = _cell_of(x, y, cells_h, cells_w)
    s, t, _ = _newton_update(_corners(table, first_cell, row, col, cells_w), s, t, px, py,
                             spacing)
    out = _outside(s, t)
    better = out <= best
    # At most _MAX_JUMP cells per step: a full Newton step off a strongly curved patch can
    # overshoot into an oscillation between two cells.
    s = jnp.clip(s, -_MAX_JUMP, 1.0 + _MAX_JUMP)
    t = jnp.clip(t, -_MAX_JUMP, 1.0 + _MAX_JUMP)
    return (jnp.clip(col + s, -0.5, cells_w + 0.5), jnp.clip(row + t, -0.5, cells_h + 0.5),
            jnp.where(better, row, best_row), jnp.where(better, col, best_col),
            jnp.where(better, out, best))

  row, col, _, _ = _cell_of(x, y, cells_h, cells_w)
  best = jnp.full(x.shape, jnp.inf, x.dtype)
  x, y, row, col, _ = jax.lax.fori_loop(0, steps, step, (x, y, row, col, best))
  return x, y, row, col


def _final(table, first_cell, x, y, row, col, px, py, shape, analytic):
  """The differentiable last solve in cell `(row, col)`, from the converged `x, y`.

  `analytic`: the closed-form inverse of the cell's patch (`solve_cell`); else one more Newton
  step from `x, y`, whose result has the implicit-function gradient at a converged iterate; its
  residual is exactly `ds dt g` (the patch is bilinear), which decides coverage with the cell.
  Returns the normalised inverse `(u, v)` and `covered`.
  """
  cells_h, cells_w = shape
  corners = _corners(table, first_cell, row, col, cells_w)
  if analytic:
    s, t, out = solve_cell(corners, px, py)
    covered = out <= _COVER_TOL
  else:
    s, t, residual = _newton_update(corners, x - col, y - row, px, py)
    covered = (_outside(s, t) <= _COVER_TOL) & (residual <= _residual_tol(corners))
  return (-1.0 + 2.0 * (col + s) / cells_w, -1.0 + 2.0 * (row + t) / cells_h, covered)


def _first_guess(profile, coord):
  """Cell index per target from a profile `[B, n]` and targets `[B, M]`: count of nodes <= it."""
  count = jnp.sum(profile[:, None, :] <= coord[:, :, None], axis=-1)
  return jnp.clip(count - 1, 0, profile.shape[-1] - 2).astype(jnp.int32)


def _profile_guess(grid, px, py):
  """Node coordinates from the 1-D inverses of the mean profiles, per target `[B, ...]`."""
  _, h, w, _ = grid.shape
  profile_x, profile_y = jax.lax.stop_gradient(_profiles(grid))
  u, _ = _invert_profile(profile_x, px.reshape(px.shape[0], -1))
  v, _ = _invert_profile(profile_y, py.reshape(py.shape[0], -1))
  return ((u.reshape(px.shape) + 1.0) * 0.5 * (w - 1), (v.reshape(py.shape) + 1.0) * 0.5 * (h - 1))


def _setup(grid, targets):
  """What the walk needs: corner table, each image's first entry, cell counts, mean cell size.

  `targets` per image decides the table's form (see `_corners`).
  """
  b, h, w, _ = grid.shape
  if (h - 1) * (w - 1) <= targets:
    table = _cell_table(grid)
    first_cell = jnp.arange(b, dtype=jnp.int32) * ((h - 1) * (w - 1))
  else:
    table = grid.reshape(b * h * w, 2)
    first_cell = jnp.arange(b, dtype=jnp.int32) * (h * w)
  # The mean cell size per image, for the walk's steps in degenerate cells.
  frozen = jax.lax.stop_gradient(grid)
  sx = jnp.mean(frozen[:, :, -1, 0] - frozen[:, :, 0, 0], axis=1) / (w - 1)
  sy = jnp.mean(frozen[:, -1, :, 1] - frozen[:, 0, :, 1], axis=1) / (h - 1)
  return table, first_cell, (h - 1, w - 1), (sx, sy)


def _invert_points_general(grid, px, py, steps=_WALK_STEPS):
  """Inverse `(u, v, covered)` of targets `px, py [B, ...]`: walk, then the analytic solve."""
  table, first_cell, shape, spacing = _setup(grid, int(np.prod(px.shape[1:])))
  expand = (-1,) + (1,) * (px.ndim - 1)
  first_cell = first_cell.reshape(expand)
  spacing = tuple(s.reshape(expand) for s in spacing)
  frozen = jax.lax.stop_gradient(table)
  fpx, fpy = jax.lax.stop_gradient(px), jax.lax.stop_gradient(py)
  x, y = _profile_guess(grid, fpx, fpy)
  x, y, row, col = _walk(frozen, first_cell, x, y, fpx, fpy, shape, steps, spacing)
  return _final(table, first_cell, x, y, row, col, px, py, shape, analytic=True)


def _coarse_size(targets: int, nodes: int) -> int:
  # Two coarse targets per grid cell along the axis, at most the targets themselves.
  return min(targets, 2 * (nodes - 1) + 1)


def _two_taps(fine: int, coarse: int):
  """Static linear interpolation from `coarse` to `fine` points spanning the same index range."""
  if coarse == 1:
    return np.zeros(fine, np.int32), np.zeros(fine, np.int32), np.zeros(fine, np.float32)
  position = np.arange(fine) * ((coarse - 1) / max(fine - 1, 1))
  lo = np.minimum(np.floor(position).astype(np.int32), coarse - 2)
  return lo, lo + 1, (position - lo).astype(np.float32)


def _interpolate_axis(values, fine, axis):
  lo, hi, frac = _two_taps(fine, values.shape[axis])
  shape = [1] * values.ndim
  shape[axis] = fine
  frac = jnp.asarray(frac.reshape(shape))
  low, high = jnp.take(values, lo, axis=axis), jnp.take(values, hi, axis=axis)
  return low + (high - low) * frac


def _written(x, y):
  """`x, y [B, H, W]` written out once, not recomputed inside each of their consumers.

  XLA:CPU fuses cheap producers into every consumer; the iterates feed several gathers and the
  Newton update, so without this each stage's work was repeated in the next (measured several
  times slower). `fusion.materialised` ends the fusion.
  """
  both = fusion.materialised(jnp.stack([x, y], axis=-1))
  return both[..., 0], both[..., 1]


def _invert_lattice_general(grid, xs, ys):
  """Inverse on the lattice `xs [B, W]` x `ys [B, H]`: coarse-to-fine (see `invert_lattice`)."""
  b, h, w, _ = grid.shape
  big_h, big_w = ys.shape[-1], xs.shape[-1]
  coarse_h, coarse_w = _coarse_size(big_h, h), _coarse_size(big_w, w)
  xs_c = _interpolate_axis(xs, coarse_w, 1) if coarse_w < big_w else xs
  ys_c = _interpolate_axis(ys, coarse_h, 1) if coarse_h < big_h else ys
  xs_c, ys_c = jax.lax.stop_gradient(xs_c), jax.lax.stop_gradient(ys_c)
  px_c = jnp.broadcast_to(xs_c[:, None, :], (b, coarse_h, coarse_w))
  py_c = jnp.broadcast_to(ys_c[:, :, None], (b, coarse_h, coarse_w))
  table, first_cell, shape, spacing = _setup(grid, big_h * big_w)
  first_cell = first_cell[:, None, None]
  spacing = tuple(s[:, None, None] for s in spacing)
  frozen = jax.lax.stop_gradient(table)
  # The lattice's first guess is separable: one per column and one per row.
  x, y = _profile_guess(grid, xs_c, ys_c)
  x = jnp.broadcast_to(x[:, None, :], (b, coarse_h, coarse_w))
  y = jnp.broadcast_to(y[:, :, None], (b, coarse_h, coarse_w))
  x, y, row, col = _walk(frozen, first_cell, x, y, px_c, py_c, shape, _WALK_STEPS, spacing)
  if (coarse_h, coarse_w) != (big_h, big_w):
    x = _interpolate_axis(_interpolate_axis(x, big_h, 1), big_w, 2)
    y = _interpolate_axis(_interpolate_axis(y, big_h, 1), big_w, 2)
    # One full-resolution step from the interpolated coarse solution, which is already close.
    px = jnp.broadcast_to(jax.lax.stop_gradient(xs)[:, None, :], (b, big_h, big_w))
    py = jnp.broadcast_to(jax.lax.stop_gradient(ys)[:, :, None], (b, big_h, big_w))
    x, y = _written(x, y)
    for _ in range(_FINE_STEPS):
      # Plain Newton steps: the coarse walk has already dealt with degenerate cells.
      row, col, s, t = _cell_of(x, y, *shape)
      s, t, _ = _newton_update(_corners(frozen, first_cell, row, col, shape[1]), s, t, px, py)
      x = jnp.clip(col + s, -0.5, shape[1] + 0.5)
      y = jnp.clip(row + t, -0.5, shape[0] + 0.5)
      x, y = _written(x, y)
  # The final Newton step continues from the iterate, so in the iterate's own cell.
  row, col, _, _ = _cell_of(x, y, *shape)
  px = jnp.broadcast_to(xs[:, None, :], (b, big_h, big_w))
  py = jnp.broadcast_to(ys[:, :, None], (b, big_h, big_w))
  return _final(table, first_cell, x, y, row, col, px, py, shape, analytic=False)


def _invert_profile(profile, coord):
  """1-D piecewise-linear inverse of non-decreasing `profile [B, n]` at `coord [B, M]`.

  Returns the normalised position (align_corners=True over `n` nodes, extrapolated linearly from
  the end segments) and whether the profile's range covers the target.
  """
  n = profile.shape[-1]
  k = _first_guess(jax.lax.stop_gradient(profile), jax.lax.stop_gradient(coord))
  lo = jnp.take_along_axis(profile, k, axis=-1)
  hi = jnp.take_along_axis(profile, k + 1, axis=-1)
  step = hi - lo
  frac = _safe_div(coord - lo, step, step > 0, 0.0)
  position = -1.0 + 2.0 * (k.astype(jnp.float32) + frac) / (n - 1)
  tol = _COVER_TOL * jnp.abs(profile[:, -1:] - profile[:, :1]) / (n - 1)
  covered = (coord >= profile[:, :1] - tol) & (coord <= profile[:, -1:] + tol)
  return position, covered


def _profiles(grid):
  """The mean column profile of x `[B, w]` and the mean row profile of y `[B, h]`.

  Written out once (see `_written`): fused into their consumers, the means were recomputed for
  every target they are compared with.
  """
  _, h, w, _ = grid.shape
  profile_x, profile_y = jnp.mean(grid[..., 0], axis=1), jnp.mean(grid[..., 1], axis=2)
  n = max(h, w)
  pad = lambda p: jnp.pad(p, ((0, 0), (0, n - p.shape[-1])))
  both = fusion.materialised(jnp.stack([pad(profile_x), pad(profile_y)], axis=-1)[:, None])
  return both[:, 0, :w, 0], both[:, 0, :h, 1]


def _nan_images(grid):
  """`[B]` bool: the images whose grid holds NaN."""
  return jnp.any(jnp.isnan(grid), axis=(1, 2, 3))


def _poison(u, v, covered, bad):
  """NaN positions and covered False for the images flagged `bad` (`[B]`)."""
  bad = bad.reshape(bad.shape + (1,) * (u.ndim - 1))
  return jnp.where(bad, jnp.nan, u), jnp.where(bad, jnp.nan, v), covered & ~bad


@functools.partial(jax.jit, static_argnames=("axis_aligned", "fill"))
def invert_lattice(grid, xs, ys, *, axis_aligned=False, fill=None):
  """Inverse at the lattice of targets `xs [W]` x `ys [H]`.

  Returns `(inverse [B, H, W, 2], covered [B, H, W])`; where nothing covers the target, `inverse`
  extrapolates the nearest cell's patch, or is `fill` (a float) if given. See `invert_grid` for
  the conventions; an image whose grid holds NaN gets NaN and covered False.
  """
  grid = grid.astype(jnp.float32)
  b, h, w, _ = grid.shape
  xs = jnp.broadcast_to(jnp.asarray(xs, jnp.float32), (b, xs.shape[-1]))
  ys = jnp.broadcast_to(jnp.asarray(ys, jnp.float32), (b, ys.shape[-1]))
  big_h, big_w = ys.shape[-1], xs.shape[-1]
  if axis_aligned:
    profile_x, profile_y = _profiles(grid)
    u, cover_x = _invert_profile(profile_x, xs)
    v, cover_y = _invert_profile(profile_y, ys)
    u = jnp.broadcast_to(u[:, None, :], (b, big_h, big_w))
    v = jnp.broadcast_to(v[:, :, None], (b, big_h, big_w))
    covered = cover_x[:, None, :] & cover_y[:, :, None]
    return _finish(u, v, covered, grid, fill)
  fill = float("nan") if fill is None else float(fill)
  return native.dispatch(
      lambda grid, xs, ys: _invert_lattice_native(grid, xs, ys, fill),
      lambda grid, xs, ys: _finish(*_invert_lattice_general(grid, xs, ys), grid, fill),
      grid, xs, ys)


def _finish(u, v, covered, grid, fill):
  """`invert_lattice`'s outputs from the inverse's `u, v, covered [B, H, W]`."""
  u, v, covered = _poison(u, v, covered, _nan_images(grid))
  inverse = jnp.stack([u, v], axis=-1)
  if fill is None or np.isnan(fill):
    return inverse, covered
  keep = covered | jnp.isnan(u)  # NaN grids keep their NaN.
  return jnp.where(keep[..., None], inverse, jnp.float32(fill)), covered


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _invert_lattice_native(grid, xs, ys, fill):
  """`_invert_lattice_general` (then `_finish`) by `native`'s kernel: the exact solve in each
  target's cell."""
  return native.invert_lattice(grid, xs, ys, fill=fill)


def _invert_lattice_native_fwd(grid, xs, ys, fill):
  inverse, covered = native.invert_lattice(grid, xs, ys, fill=fill)
  return (inverse, covered), (grid, xs, ys, inverse, covered)


def _invert_lattice_native_bwd(fill, residuals, cotangents):
  # The implicit-function gradient of the solution, as the XLA path's final Newton step gives it
  # (`_final`), written out: at the solution `(s, t)` of cell `(row, col)` the residual
  # r = P(s, t) - p of the cell's bilinear patch P vanishes, so d(s, t) = -J^-1 dr, where dr is
  # the corners' moves weighted bilinearly at (s, t) minus the target's. The cotangent
  # q = -J^-T g is thus scattered to the four corners with bilinear weights (the transpose of
  # grid_sample's reads, on the CPU the kernel of `taps.scatter_to_image`), where autodiff of
  # the Newton step would transpose its corner gathers with XLA:CPU's slow scatter-add.
  grid, xs, ys, inverse, covered = residuals
  g_inverse, _ = cotangents
  _, h, w, _ = grid.shape
  cells_h, cells_w = h - 1, w - 1
  # The node coordinates of the solution; a filled target's value does not depend on the grid.
  x = (inverse[..., 0] + 1.0) * 0.5 * cells_w
  y = (inverse[..., 1] + 1.0) * 0.5 * cells_h
  if not np.isnan(fill):
    x, y = jnp.where(covered, x, 0.0), jnp.where(covered, y, 0.0)
    g_inverse = jnp.where(covered[..., None], g_inverse, 0.0)
  row, col, s, t = _cell_of(x, y, cells_h, cells_w)
  first_node = (jnp.arange(grid.shape[0], dtype=jnp.int32) * (h * w))[:, None, None]
  corners = _corners(grid.reshape(-1, 2), first_node, row, col, cells_w)
  _, (j00, j01, j10, j11), det, regular = _patch_jacobian(corners, s, t)
  inv = _safe_div(1.0, det, regular, 0.0)  # As `_final`'s step: no gradient where singular.
  # The cotangents of (s, t): those of the normalised (u, v) = -1 + 2 (col + s, row + t) / cells.
  gs = g_inverse[..., 0] * (2.0 / cells_w)
  gt = g_inverse[..., 1] * (2.0 / cells_h)
  qx = (j10 * gt - j11 * gs) * inv
  qy = (j01 * gs - j00 * gt) * inv
  grad_grid = taps.scatter_to_image(grid, row.astype(jnp.int32), col.astype(jnp.int32),
                                    (1.0 - t, t), (1.0 - s, s), jnp.stack([qx, qy], axis=-1))
  return grad_grid, -jnp.sum(qx, axis=1), -jnp.sum(qy, axis=2)


_invert_lattice_native.defvjp(_invert_lattice_native_fwd, _invert_lattice_native_bwd)


@functools.partial(jax.jit, static_argnames=("axis_aligned",))
def invert_points(grid, points, *, axis_aligned=False):
  """Extrapolated inverse of `points [B, N, 2]`: `(warped [B, N, 2], covered [B, N])`."""
  grid = grid.astype(jnp.float32)
  points = points.astype(jnp.float32)
  px, py = points[..., 0], points[..., 1]
  profile_x, profile_y = _profiles(grid)
  if axis_aligned:
    u, cover_x = _invert_profile(profile_x, px)
    v, cover_y = _invert_profile(profile_y, py)
    covered = cover_x & cover_y
  else:
    u, v, covered = _invert_points_general(grid, px, py)
  u, v, covered = _poison(u, v, covered, _nan_images(grid))
  return jnp.stack([u, v], axis=-1), covered


def check_grid(grid: jax.Array, name: str = "grid", *, axis_aligned: bool = False) -> jax.Array:
  """Checks a `[B, h, w, 2]` floating grid with `h, w >= 2`; values too when concrete."""
  grid = validation.check_grid(grid, name, min_nodes=2, finite=True)
  if axis_aligned:
    value = validation.concrete_value(grid)
    if value is not None:
      x, y = value[..., 0], value[..., 1]
      spread = max(np.max(np.abs(x - x[:, :1])), np.max(np.abs(y - y[:, :, :1])))
      if spread > 1e-5:
        raise ValueError(f"axis_aligned=True needs x constant down each column and y along each "
                         f"row; got a deviation of {spread:.3g}.")
      if np.any(np.diff(x[:, 0], axis=-1) < 0) or np.any(np.diff(y[:, :, 0], axis=-1) < 0):
        raise ValueError(f"axis_aligned=True needs non-decreasing column and row profiles; got "
                         f"a decreasing {name}.")
  return grid


def lattice(size: int) -> jax.Array:
  """The align_corners=True positions `-1 + 2 k / (size - 1)` (0 for a single pixel)."""
  if size == 1:
    return jnp.zeros((1,), jnp.float32)
  return jnp.asarray(np.linspace(-1.0, 1.0, size), jnp.float32)


def invert_grid(
    grid: jax.Array,
    out_shape: Sequence[int],
    *,
    axis_aligned: bool = False,
    align_corners: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """The exact inverse of the piecewise-bilinear warp of `grid`, on an `out_shape` source frame.

  Args:
    grid: `[B, h, w, 2]` floating, `h, w >= 2`: a sampling grid as `grid_sample` takes it (output
      pixel `(i, j)` reads source point `grid[b, i, j] = (x, y)`), its nodes on the
      align_corners=True lattice of the warped image.
    out_shape: `(H, W)` of the source frame: pixel `(I, J)` is the normalised source position
      `p = (-1 + 2 J / (W - 1), -1 + 2 I / (H - 1))` (0 for a size of 1) with align_corners
      True, `p = (-1 + (2 J + 1) / W, -1 + (2 I + 1) / H)` with False.
    align_corners: the convention of the source positions in `grid`'s values (the one the
      grid samples the source with).
    axis_aligned: True for grids whose `x` depends only on the column and `y` only on the row,
      with non-decreasing profiles (the axis-aligned attraction grid): inverts the two 1-D
      profiles, exactly and at almost no cost. Not detected automatically (that needs the
      grid's values, which are unknown under `jit`); outside `jit` a grid that is not
      axis-aligned and monotone is rejected.

  Returns:
    `(inverse [B, H, W, 2], covered [B, H, W] bool)`: `inverse` the normalised warped position
    (align_corners=True over the grid's nodes) whose bilinear interpolation of `grid` is `p`;
    `grid_sample(warped, inverse, align_corners=True)` unzooms. Where no cell covers `p`,
    `covered` is False and `inverse` is `(UNCOVERED, UNCOVERED) = (-2, -2)`, so that zero padding
    reads 0. Gradients flow to `grid` through the solve in the chosen cell. Under `jit`, an image
    whose grid holds NaN gets NaN inverse and covered False.

  Raises:
    ValueError: on a bad shape or `out_shape`, or (outside `jit`) a grid holding NaN or infinity,
      or, with `axis_aligned=True`, one that is not axis-aligned and monotone.
  """
  grid = check_grid(grid, axis_aligned=axis_aligned)
  big_h, big_w = validation.check_shape(out_shape, "out_shape")
  align_corners = validation.check_bool(align_corners, "align_corners")
  return invert_lattice(grid, _pixel_centres(big_w, big_w, align_corners),
                        _pixel_centres(big_h, big_h, align_corners),
                        axis_aligned=bool(axis_aligned), fill=UNCOVERED)


def _pixel_centres(out_size: int, source_size: int, align_corners: bool) -> jax.Array:
  """Normalised positions, in the `align_corners` convention over `source_size` pixels, of the
  centres of `out_size` even bins (the source's own pixels when the sizes are equal)."""
  centres = (np.arange(out_size) + 0.5) * (source_size / out_size) - 0.5
  if not align_corners:
    return jnp.asarray(-1.0 + (2.0 * centres + 1.0) / source_size, jnp.float32)
  if source_size == 1:
    return jnp.zeros((out_size,), jnp.float32)
  return jnp.asarray(-1.0 + 2.0 * centres / (source_size - 1), jnp.float32)


def unwarp(
    features: jax.Array | Sequence[jax.Array],
    grid: jax.Array,
    out_shape: Sequence[int],
    *,
    source_shape: Sequence[int] | None = None,
    axis_aligned: bool = False,
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> tuple[jax.Array, jax.Array]:
  """Resamples features of the warped image into a uniform frame of the source (unzooming).

  The warped image is the `[h, w]` output of `grid_sample(source, grid)`. `features` may have any
  stride: their `hf x wf` pixels tile the warped image evenly, feature pixel `(a, b)` centred at
  warped pixel `((a + 0.5) h / hf - 0.5, (b + 0.5) w / wf - 0.5)` (the centre of its stride-sized
  block, as average pooling or a strided convolution with "same" padding places it). Each output
  pixel reads the features bilinearly at the inverse warp of its source position.

  Args:
    features: `[B, hf, wf, C]` floating (or uint8), computed on the warped image; or a sequence
      of such maps (of any strides and channels: a backbone's stages), all unwarped with one
      inverse of the grid, which costs most of the work.
    grid: `[B, h, w, 2]` the sampling grid that made the warped image (see `invert_grid`).
    out_shape: `(H, W)` of the output frame.
    source_shape: `(Hs, Ws)`, the source image's size in pixels: the output pixels tile the
      source evenly, each at the centre of its block of source pixels, like the feature pixels
      on the warped image (so that a stride-s feature map unwarps to a stride-s map of the
      source). None: `out_shape` (output pixel `(I, J)` at source pixel `(I, J)`, as
      `invert_grid` places it).
    axis_aligned: the fast path of `invert_grid`.
    padding_mode: how feature reads beyond the warped image are padded (`grid_sample`'s modes).
      With "zeros" the uncovered output pixels are exactly 0; with "border" or "reflection" they
      read the features at the extrapolated inverse (the nearest cell's patch extended).
    align_corners: the convention of the source positions in `grid`'s values (the one
      `grid_sample` or `saliency_sample` sampled the source with).

  Returns:
    `(unwarped [B, H, W, C] float32 (the features' dtype for floating features), covered [B, H, W]
    bool)`, `covered` as `invert_grid` returns it; for a sequence of maps, a list of unwarped
    maps in their order. Gradients flow to the features and the grid.

  Raises:
    ValueError: on bad shapes, mismatched batches, a bad `out_shape`, `source_shape` or
      `padding_mode`, or (outside `jit`) a grid holding NaN or infinity.
  """
  several = isinstance(features, (list, tuple))
  maps = [validation.check_image(f, "features") for f in (features if several else [features])]
  if not maps:
    raise ValueError("features must be a feature map or a non-empty sequence of them; got an "
                     "empty sequence.")
  grid = check_grid(grid, axis_aligned=axis_aligned)
  for f in maps:
    if f.shape[0] != grid.shape[0]:
      raise ValueError(f"features and grid must have the same batch size; got features shape "
                       f"{f.shape} and grid shape {grid.shape}.")
  if padding_mode not in sampling.PADDING_MODES:
    raise ValueError(f"padding_mode must be one of {sampling.PADDING_MODES}; got "
                     f"{padding_mode!r}.")
  big_h, big_w = validation.check_shape(out_shape, "out_shape")
  source_h, source_w = validation.check_shape(
      out_shape if source_shape is None else source_shape, "source_shape")
  align_corners = validation.check_bool(align_corners, "align_corners")
  xs = _pixel_centres(big_w, source_w, align_corners)
  ys = _pixel_centres(big_h, source_h, align_corners)
  outs, covered = _unwarp(tuple(maps), grid, xs, ys, bool(axis_aligned), padding_mode)
  return (outs if several else outs[0]), covered


@functools.partial(jax.jit, static_argnames=("axis_aligned", "padding_mode"))
def _unwarp(maps, grid, xs, ys, axis_aligned, padding_mode):
  _, h, w, _ = grid.shape
  inverse, covered = invert_lattice(grid, xs, ys, axis_aligned=axis_aligned)
  u, v = inverse[..., 0], inverse[..., 1]
  # Warped pixel coordinates (align_corners=True over the grid's nodes), then the half-pixel
  # normalisation of the warped image, which is the features' align_corners=False frame.
  wx = (u + 1.0) * 0.5 * (w - 1)
  wy = (v + 1.0) * 0.5 * (h - 1)
  positions = jnp.stack([(wx + 0.5) * 2.0 / w - 1.0, (wy + 0.5) * 2.0 / h - 1.0], axis=-1)
  outs = []
  for features in maps:
    out = sampling.grid_sample(features, positions, align_corners=False,
                               padding_mode=padding_mode)
    if padding_mode == "zeros":
      out = jnp.where(covered[..., None], out, jnp.zeros((), out.dtype))
    outs.append(out)
  return outs, covered
