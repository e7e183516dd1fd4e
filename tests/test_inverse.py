"""invert_grid, unwarp and the analytic cell solve against brute-force references.

References: a NumPy brute force that runs Newton's method in float64 in every cell for every
target (independent of the quadratic formula), and the PyTorch port of the analytic inverse in
`tests/references/torch_inverse.py` (every cell, float64). Both only accept solutions that
reproduce the target through the forward bilinear map.
"""

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.ops import inverse
from tests.references import torch_inverse


def smooth_grid(b, h, w, amp=0.05, seed=0):
  """An identity lattice with a smooth, fold-free distortion (random phases per image)."""
  rng = np.random.default_rng(seed)
  ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
  g = np.stack([xs, ys], -1)[None].repeat(b, 0)
  g = g + amp * np.sin(3 * g[..., ::-1] + rng.normal(size=(b, 1, 1, 2)))
  return g.astype(np.float32)


def forward(grid, warped):
  """The piecewise-bilinear map of `grid` at normalised warped positions `[B, ..., 2]` (NumPy)."""
  grid = np.asarray(grid, np.float64)
  warped = np.nan_to_num(np.asarray(warped, np.float64))
  b, h, w, _ = grid.shape
  x = (warped[..., 0] + 1) / 2 * (w - 1)
  y = (warped[..., 1] + 1) / 2 * (h - 1)
  j = np.clip(np.floor(x).astype(int), 0, w - 2)
  i = np.clip(np.floor(y).astype(int), 0, h - 2)
  s, t = (x - j)[..., None], (y - i)[..., None]
  bi = np.arange(b).reshape((b,) + (1,) * (x.ndim - 1))
  return ((1 - s) * (1 - t) * grid[bi, i, j] + s * (1 - t) * grid[bi, i, j + 1]
          + (1 - s) * t * grid[bi, i + 1, j] + s * t * grid[bi, i + 1, j + 1])


def numpy_brute_force(grid, targets):
  """Newton's method (float64, 40 steps from the centre) in every cell; NaN where none solves."""
  grid = np.asarray(grid, np.float64)
  b, h, w, _ = grid.shape
  out = np.full(targets.shape, np.nan)
  for k in range(b):
    p = targets[k].astype(np.float64)
    for i in range(h - 1):
      for j in range(w - 1):
        a, bb, c, d = grid[k, i, j], grid[k, i, j + 1], grid[k, i + 1, j], grid[k, i + 1, j + 1]
        s = np.full(len(p), 0.5)
        t = s.copy()
        for _ in range(40):
          r = ((1 - s) * (1 - t))[:, None] * a + (s * (1 - t))[:, None] * bb \
              + ((1 - s) * t)[:, None] * c + (s * t)[:, None] * d - p
          js = (1 - t)[:, None] * (bb - a) + t[:, None] * (d - c)
          jt = (1 - s)[:, None] * (c - a) + s[:, None] * (d - bb)
          det = js[:, 0] * jt[:, 1] - jt[:, 0] * js[:, 1]
          det = np.where(np.abs(det) < 1e-300, 1e-300, det)
          s = np.clip(s - (jt[:, 1] * r[:, 0] - jt[:, 0] * r[:, 1]) / det, -2, 3)
          t = np.clip(t - (js[:, 0] * r[:, 1] - js[:, 1] * r[:, 0]) / det, -2, 3)
        r = ((1 - s) * (1 - t))[:, None] * a + (s * (1 - t))[:, None] * bb \
            + ((1 - s) * t)[:, None] * c + (s * t)[:, None] * d - p
        ok = ((s >= -1e-9) & (s <= 1 + 1e-9) & (t >= -1e-9) & (t <= 1 + 1e-9)
              & (np.abs(r).max(-1) < 1e-10) & np.isnan(out[k, :, 0]))
        out[k, ok] = np.stack([-1 + 2 * (j + s[ok]) / (w - 1), -1 + 2 * (i + t[ok]) / (h - 1)], -1)
  return out


def lattice_targets(out_h, out_w):
  ys, xs = np.meshgrid(np.linspace(-1, 1, out_h), np.linspace(-1, 1, out_w), indexing="ij")
  return np.stack([xs, ys], -1)


def peaked_attraction_grid(b, size, out, seed=0):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(2.0 * rng.normal(size=(b, size, size)), jnp.float32)
  return np.asarray(sj.attraction_grid(sj.softmax_saliency(logits), (out, out)))


@pytest.mark.parametrize("grid", [smooth_grid(2, 6, 7), smooth_grid(1, 5, 5, amp=0.12, seed=3)])
def test_invert_grid_matches_numpy_brute_force(grid):
  out_h, out_w = 23, 19
  inv, covered = sj.invert_grid(grid, (out_h, out_w))
  targets = lattice_targets(out_h, out_w).reshape(1, -1, 2).repeat(grid.shape[0], 0)
  ref = numpy_brute_force(grid, targets).reshape(grid.shape[0], out_h, out_w, 2)
  ref_covered = ~np.isnan(ref[..., 0])
  np.testing.assert_array_equal(np.asarray(covered), ref_covered)
  np.testing.assert_allclose(np.asarray(inv)[ref_covered], ref[ref_covered], atol=2e-5)
  # Uncovered targets get the sentinel, outside [-1, 1].
  assert np.all(np.asarray(inv)[~ref_covered] == inverse.UNCOVERED)


def test_warp_points_matches_torch_port_on_attraction_grid():
  # A peaked attraction grid: clipped flat borders (zero-width cells), strong zoom.
  grid = peaked_attraction_grid(2, 9, 9)
  rng = np.random.default_rng(1)
  points = rng.uniform(-1, 1, (2, 300, 2)).astype(np.float32)
  warped, covered = sj.warp_points(points, grid)
  ref, ref_covered = torch_inverse.invert(grid, points)
  ref, ref_covered = ref.numpy(), ref_covered.numpy()
  np.testing.assert_array_equal(np.asarray(covered), ref_covered)
  # Positions may differ where zero-width cells make the inverse ambiguous; the forward map of
  # both must give the point back.
  np.testing.assert_allclose(forward(grid, np.asarray(warped))[ref_covered],
                             points[ref_covered], atol=1e-5)
  np.testing.assert_allclose(forward(grid, ref)[ref_covered], points[ref_covered], atol=1e-9)


def folded_grid():
  """A 5x5 grid over [-0.8, 0.8]^2 whose top border's middle node is pushed down past the next
  row: its two top cells fold over, covering a region that the border curve does not enclose."""
  lin = np.linspace(-0.8, 0.8, 5, dtype=np.float32)
  grid = np.stack(np.meshgrid(lin, lin), -1)[None].copy()
  grid[0, 0, 2, 1] = 0.5 * (lin[1] + lin[2])
  return grid


def test_warp_points_finds_targets_in_folded_cells():
  """In a folded cell one root of the patch's quadratic can miss the target (its least-squares
  t does not reproduce it) while the other fits: the solve must take the one that fits."""
  grid = folded_grid()
  px, py = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 37))
  points = np.stack([px, py], -1).reshape(1, -1, 2).astype(np.float32)
  warped, covered = sj.warp_points(points, grid)
  _, ref_covered = torch_inverse.invert(grid, points)
  ref_covered = ref_covered.numpy()
  np.testing.assert_array_equal(np.asarray(covered), ref_covered)
  np.testing.assert_allclose(forward(grid, np.asarray(warped))[ref_covered],
                             points[ref_covered], atol=1e-5)


def test_lattice_matches_torch_port_away_from_clipped_border():
  grid = peaked_attraction_grid(2, 9, 9, seed=2)
  inv, covered = sj.invert_grid(grid, (40, 40))
  targets = lattice_targets(40, 40).reshape(1, -1, 2).repeat(2, 0)
  ref, ref_covered = torch_inverse.invert(grid, targets)
  ref_covered = ref_covered.numpy().reshape(2, 40, 40)
  covered = np.asarray(covered)
  # Never covered where nothing covers; the forward map reproduces every covered target.
  assert not np.any(covered & ~ref_covered)
  # The lattice path accepts a residual up to _COVER_TOL of the cell size (cells here ~0.25).
  np.testing.assert_allclose(forward(grid, np.asarray(inv))[covered],
                             targets.reshape(2, 40, 40, 2)[covered], atol=1e-4)
  # Misses are allowed only next to the flat (clipped) border, see the module docstring.
  interior = np.all(np.abs(targets.reshape(2, 40, 40, 2)) < 0.9, axis=-1)
  np.testing.assert_array_equal(covered[interior], ref_covered[interior])


def test_identity_grid_inverts_to_identity():
  h, w = 7, 9
  ident = lattice_targets(h, w)[None].astype(np.float32)
  inv, covered = sj.invert_grid(ident, (13, 17))
  assert np.all(np.asarray(covered))
  np.testing.assert_allclose(np.asarray(inv)[0], lattice_targets(13, 17), atol=1e-6)
  inv_a, covered_a = sj.invert_grid(ident, (13, 17), axis_aligned=True)
  assert np.all(np.asarray(covered_a))
  np.testing.assert_allclose(np.asarray(inv_a)[0], lattice_targets(13, 17), atol=1e-6)


def test_monotone_grid_covers_whole_interior():
  grid = smooth_grid(2, 8, 8, amp=0.08, seed=5)
  inv, covered = sj.invert_grid(grid, (31, 29))
  # The grid's image: inside the mapped boundary. Interior targets well inside every border.
  targets = lattice_targets(31, 29)
  inner = np.all(np.abs(targets) < 1 - 0.08 * 1.01, axis=-1)
  assert np.all(np.asarray(covered)[:, inner])


def test_axis_aligned_fast_path_equals_general_path():
  rng = np.random.default_rng(4)
  steps_x = rng.uniform(0.2, 1.0, (2, 10))
  steps_y = rng.uniform(0.2, 1.0, (2, 8))
  px = np.concatenate([np.zeros((2, 1)), np.cumsum(steps_x, 1)], 1)
  py = np.concatenate([np.zeros((2, 1)), np.cumsum(steps_y, 1)], 1)
  px = -0.95 + 1.9 * px / px[:, -1:]
  py = -0.9 + 1.8 * py / py[:, -1:]
  grid = np.stack(np.broadcast_arrays(px[:, None, :], py[:, :, None]), -1).astype(np.float32)
  fast, fast_cov = sj.invert_grid(grid, (25, 27), axis_aligned=True)
  slow, slow_cov = sj.invert_grid(grid, (25, 27))
  np.testing.assert_array_equal(np.asarray(fast_cov), np.asarray(slow_cov))
  np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), atol=2e-5)
  # 1-D reference: np.interp inverts each monotone profile.
  xs = np.linspace(-1, 1, 27)
  nodes = np.linspace(-1, 1, 11)
  inside = (xs >= px[0, 0]) & (xs <= px[0, -1])
  np.testing.assert_allclose(np.asarray(fast)[0, 3, inside, 0],
                             np.interp(xs[inside], px[0], nodes), atol=1e-5)
  with pytest.raises(ValueError, match="axis_aligned"):
    sj.invert_grid(smooth_grid(1, 5, 5), (4, 4), axis_aligned=True)


def test_solve_cell_degenerate_cells_finite_values_and_gradients():
  # A parallelogram (g = 0: the linear case), a zero-area cell, a cell collapsed to a segment.
  cells = {
      "parallelogram": ((0.0, 0.0), (1.0, 0.2), (0.3, 1.0), (1.3, 1.2)),
      "zero_area": ((0.5, 0.5),) * 4,
      "segment": ((0.0, 0.0), (1.0, 0.0), (0.0, 0.0), (1.0, 0.0)),
  }
  target = (0.55, 0.45)
  for name, corners in cells.items():
    flat = tuple(jnp.float32(c) for corner in corners for c in corner)

    def loss(flat, p):
      s, t, _ = inverse.solve_cell(flat, p[0], p[1])
      return s + 2 * t

    value = loss(flat, jnp.asarray(target))
    grads = jax.grad(loss, argnums=(0, 1))(flat, jnp.asarray(target))
    assert np.isfinite(float(value)), name
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads)), name
  # The parallelogram's solution is the affine inverse: solve [e f] (s, t) = p - A.
  s, t, out = inverse.solve_cell(tuple(jnp.float32(c) for corner in cells["parallelogram"]
                                       for c in corner), *map(jnp.float32, target))
  expected = np.linalg.solve(np.array([[1.0, 0.3], [0.2, 1.0]]), np.array(target))
  np.testing.assert_allclose([float(s), float(t)], expected, rtol=1e-5)
  assert float(out) == 0.0


def test_gradients_match_finite_differences():
  grid = jnp.asarray(smooth_grid(1, 5, 6, amp=0.06, seed=7))
  points = jnp.asarray([[[0.1, -0.3], [-0.45, 0.52], [0.7, 0.05]]], jnp.float32)
  f = lambda g, p: sj.warp_points(p, g)[0]
  jtu.check_grads(f, (grid, points), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-3)
  # The lattice path's gradient (implicit-function step) agrees with the points path's.
  cot = np.random.default_rng(0).normal(size=(1, 9, 8, 2)).astype(np.float32)
  # Only covered targets: uncovered ones get a constant on the lattice, an extrapolation as points.
  cot = jnp.asarray(cot * np.asarray(sj.invert_grid(grid, (9, 8))[1])[..., None])
  lat = lambda g: jnp.sum(sj.invert_grid(g, (9, 8))[0] * cot)
  pts = lattice_targets(9, 8).reshape(1, -1, 2).astype(np.float32)
  via_points = lambda g: jnp.sum(sj.warp_points(pts, g)[0].reshape(1, 9, 8, 2) * cot)
  np.testing.assert_allclose(np.asarray(jax.grad(lat)(grid)),
                             np.asarray(jax.grad(via_points)(grid)), atol=1e-4)


def test_jit_and_vmap_match_eager():
  grid = smooth_grid(3, 6, 6, seed=8)
  eager = sj.invert_grid(grid, (11, 12))
  jitted = jax.jit(lambda g: sj.invert_grid(g, (11, 12)))(grid)
  looped = [sj.invert_grid(grid[i:i + 1], (11, 12)) for i in range(3)]
  vmapped = jax.vmap(lambda g: sj.invert_grid(g[None], (11, 12)))(grid)
  for k in range(2):
    np.testing.assert_array_equal(np.asarray(eager[k]), np.asarray(jitted[k]))
    np.testing.assert_allclose(np.asarray(vmapped[k])[:, 0],
                               np.concatenate([np.asarray(l[k]) for l in looped]), atol=1e-6)


def test_bad_input():
  grid = smooth_grid(2, 5, 5)
  with pytest.raises(ValueError, match="out_shape"):
    sj.invert_grid(grid, (0, 4))
  with pytest.raises(ValueError, match="shape"):
    sj.invert_grid(grid[..., :1], (4, 4))
  bad = grid.copy()
  bad[1, 2, 2, 0] = np.nan
  with pytest.raises(ValueError, match="finite"):
    sj.invert_grid(bad, (4, 4))
  with pytest.raises(ValueError, match="batch"):
    sj.unwarp(np.zeros((3, 4, 4, 1), np.float32), grid, (4, 4))
  # Under jit: the image with NaN gets NaN and covered False, the other is unaffected.
  inv, covered = jax.jit(lambda g: sj.invert_grid(g, (6, 6)))(bad)
  assert np.all(np.isnan(np.asarray(inv)[1])) and not np.any(np.asarray(covered)[1])
  np.testing.assert_array_equal(np.asarray(inv)[0], np.asarray(sj.invert_grid(grid, (6, 6))[0])[0])


def _avg_pool(x, s):
  b, h, w, c = x.shape
  return x.reshape(b, h // s, s, w // s, s, c).mean(axis=(2, 4))


def test_unwarp_pixel_centre_convention_identity_is_exact():
  # With the identity grid the warped image is the source; a stride-4 pooled feature map must
  # unwarp to the stride-4 pooling of the source exactly, at its own pixel centres.
  rng = np.random.default_rng(0)
  image = rng.normal(size=(2, 32, 24, 3)).astype(np.float32)
  ident = np.broadcast_to(lattice_targets(32, 24)[None], (2, 32, 24, 2)).astype(np.float32)
  features = _avg_pool(image, 4)
  out, covered = sj.unwarp(features, ident, (8, 6), source_shape=(32, 24))
  assert np.all(np.asarray(covered))
  np.testing.assert_allclose(np.asarray(out), features, atol=1e-5)


def test_unwarp_of_warped_average_pooled_image_where_magnified():
  # A zoom into the centre (magnification 2, an affine grid): where the magnification is >= 1,
  # the stride-s pooled warped image unwarps to the stride-s pooled source (a smooth image, so
  # the bilinear reads of both sides agree closely); outside the zoomed window nothing covers.
  size, out = 64, 64
  ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  image = (np.sin(xs / 5.0) + np.cos(ys / 7.0))[None, :, :, None].astype(np.float32)
  grid = (0.5 * lattice_targets(out, out))[None].astype(np.float32)
  warped = sj.grid_sample(image, grid, align_corners=True)
  features = _avg_pool(np.asarray(warped), 4)
  unwarped, covered = sj.unwarp(features, grid, (16, 16), source_shape=(size, size))
  reference = _avg_pool(image, 4)
  covered = np.asarray(covered)
  assert covered[0, 6:10, 6:10].all() and not covered[0, :3].any()
  np.testing.assert_allclose(np.asarray(unwarped)[covered], reference[covered], atol=0.03)
  assert np.all(np.asarray(unwarped)[~covered] == 0)


def test_unwarp_of_several_maps_equals_unwarping_each():
  # A backbone's stages (strides 4, 8 and 16 of a 32 px warped image, other channel counts)
  # unwarped together, with one inverse, give exactly what each gives alone.
  rng = np.random.default_rng(4)
  logits = jnp.asarray(rng.normal(size=(2, 7, 7)), jnp.float32)
  grid = sj.attraction_grid(sj.softmax_saliency(logits), (32, 32))
  maps = [jnp.asarray(rng.normal(size=(2, 32 // s, 32 // s, c)), jnp.float32)
          for s, c in ((4, 3), (8, 5), (16, 2))]
  together, covered = sj.unwarp(maps, grid, (12, 12), source_shape=(48, 48))
  assert isinstance(together, list) and len(together) == 3
  for features, got in zip(maps, together):
    alone, covered_alone = sj.unwarp(features, grid, (12, 12), source_shape=(48, 48))
    np.testing.assert_array_equal(got, alone)
    np.testing.assert_array_equal(covered, covered_alone)
  with pytest.raises(ValueError, match="non-empty sequence"):
    sj.unwarp([], grid, (12, 12))
  with pytest.raises(ValueError, match="same batch size"):
    sj.unwarp([maps[0], maps[1][:1]], grid, (12, 12))


def test_unwarp_round_trip_on_attraction_grid():
  # unwarp(warp(image)) is close to the image wherever the magnification is at least 1.
  rng = np.random.default_rng(3)
  size = 48
  ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  image = (np.sin(xs / 4.0) * np.cos(ys / 6.0))[None, :, :, None].astype(np.float32)
  logits = jnp.asarray(rng.normal(size=(1, 7, 7)), jnp.float32)
  grid = sj.attraction_grid(sj.softmax_saliency(logits), (64, 64))
  warped = sj.grid_sample(image, grid, align_corners=True)
  back, covered = sj.unwarp(warped, grid, (size, size))
  inverse_mag = np.asarray(sj.grid_sample(sj.magnification(grid, (size, size))[..., None],
                                          sj.invert_grid(grid, (size, size))[0],
                                          align_corners=True))[..., 0]
  mask = np.asarray(covered) & (inverse_mag >= 1.0)
  assert mask.mean() > 0.2
  err = np.abs(np.asarray(back)[..., 0] - image[..., 0])[mask]
  assert np.median(err) < 0.01 and err.max() < 0.1


def _half_pixel_identity(h, w):
  """The align_corners=False identity: pixel centres at `-1 + (2 k + 1) / size`."""
  ys, xs = np.meshgrid(-1 + (2 * np.arange(h) + 1) / h, -1 + (2 * np.arange(w) + 1) / w,
                       indexing="ij")
  return np.stack([xs, ys], -1)[None].astype(np.float32)


def test_align_corners_false_identity_and_round_trip():
  """With `align_corners=False` the source frame's pixels sit at the half-pixel positions the
  grid's values use: the half-pixel identity inverts to the identity and unwarps pooled features
  exactly; a sampled attraction warp unwarps back to the image where it magnifies, and reading
  its values as align_corners=True (the half-pixel shift) would not."""
  ident = _half_pixel_identity(32, 24)
  inv, covered = sj.invert_grid(ident, (32, 24), align_corners=False)
  assert np.all(np.asarray(covered))
  np.testing.assert_allclose(np.asarray(inv)[0], lattice_targets(32, 24), atol=1e-6)
  image = np.random.default_rng(0).normal(size=(1, 32, 24, 3)).astype(np.float32)
  out, covered = sj.unwarp(_avg_pool(image, 4), ident, (8, 6), source_shape=(32, 24),
                           align_corners=False)
  assert np.all(np.asarray(covered))
  np.testing.assert_allclose(np.asarray(out), _avg_pool(image, 4), atol=1e-5)

  size = 48
  ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  image = (np.sin(xs / 4.0) * np.cos(ys / 6.0))[None, :, :, None].astype(np.float32)
  logits = jnp.asarray(np.random.default_rng(3).normal(size=(1, 7, 7)), jnp.float32)
  grid = sj.attraction_grid(sj.softmax_saliency(logits), (64, 64), align_corners=False)
  warped = sj.grid_sample(image, grid, align_corners=False)
  back, covered = sj.unwarp(warped, grid, (size, size), align_corners=False)
  inverse_mag = np.asarray(sj.grid_sample(
      sj.magnification(grid, (size, size))[..., None],
      sj.invert_grid(grid, (size, size), align_corners=False)[0], align_corners=False))[..., 0]
  mask = np.asarray(covered) & (inverse_mag >= 1.0)
  assert mask.mean() > 0.2
  err = np.abs(np.asarray(back)[..., 0] - image[..., 0])[mask]
  assert np.median(err) < 0.01 and err.max() < 0.1
  shifted = np.abs(np.asarray(sj.unwarp(warped, grid, (size, size))[0])[..., 0]
                   - image[..., 0])[mask]
  assert np.median(shifted) > 0.015 and shifted.max() > 0.3  # Measured: 0.022 and 0.95.
  with pytest.raises(ValueError, match="align_corners"):
    sj.unwarp(warped, grid, (size, size), align_corners="no")
