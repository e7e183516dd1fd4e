"""Points and boxes through the warp, against NumPy evaluations of the piecewise-bilinear map.

References: `forward` of tests/test_inverse.py (the bilinear map in NumPy, float64) for warped ->
source, the PyTorch brute-force inverse (tests/references/torch_inverse.py) for source -> warped,
and dense sampling of box boundaries (thousands of points per edge) for the tight boxes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from tests.references import torch_inverse
from tests.test_inverse import forward
from tests.test_inverse import smooth_grid


def _dense_boundary(boxes, n):
  f = np.linspace(0, 1, n)
  x0, y0, x1, y1 = (boxes[..., k, None] for k in range(4))
  xs, ys = x0 + (x1 - x0) * f, y0 + (y1 - y0) * f
  edges = [np.stack(np.broadcast_arrays(xs, y0), -1), np.stack(np.broadcast_arrays(xs, y1), -1),
           np.stack(np.broadcast_arrays(x0, ys), -1), np.stack(np.broadcast_arrays(x1, ys), -1)]
  return np.concatenate(edges, axis=-2)  # [B, N, 4n, 2]


def _random_boxes(rng, b, n, low=-0.8, high=0.8):
  corners = rng.uniform(low, high, (b, n, 2, 2))
  return np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)


def test_unwarp_points_is_the_bilinear_map():
  grid = smooth_grid(2, 6, 7, amp=0.08, seed=1)
  points = np.random.default_rng(0).uniform(-1, 1, (2, 50, 2)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(sj.unwarp_points(points, grid)), forward(grid, points),
                             atol=2e-6)


def test_points_round_trip():
  grid = smooth_grid(2, 8, 8, amp=0.06, seed=2)
  points = np.random.default_rng(1).uniform(-0.85, 0.85, (2, 64, 2)).astype(np.float32)
  warped, covered = sj.warp_points(points, grid)
  assert np.all(np.asarray(covered))
  np.testing.assert_allclose(np.asarray(sj.unwarp_points(warped, grid)), points, atol=2e-6)
  ref, _ = torch_inverse.invert(grid, points)
  np.testing.assert_allclose(np.asarray(warped), ref.numpy(), atol=2e-5)


def test_unwarp_boxes_is_exact_tight_box():
  grid = smooth_grid(2, 6, 6, amp=0.1, seed=3)
  boxes = _random_boxes(np.random.default_rng(2), 2, 5)
  mapped = forward(grid, _dense_boundary(boxes, 20001))
  expected = np.concatenate([mapped.min(2), mapped.max(2)], -1)
  ours = np.asarray(sj.unwarp_boxes(boxes, grid))
  # Dense sampling approaches the exact box from inside: the mapped boundary is a polyline whose
  # extremes sit at its kinks, which the samples miss by up to half a sample spacing (~4e-5 of
  # the edge) times the map's slope. Ours contains the dense box and exceeds it by no more.
  assert np.all(ours[..., :2] <= expected[..., :2] + 1e-6)
  assert np.all(ours[..., 2:] >= expected[..., 2:] - 1e-6)
  np.testing.assert_allclose(ours, expected, atol=5e-6)


def test_warp_boxes_against_dense_brute_force_inverse():
  grid = smooth_grid(1, 6, 6, amp=0.06, seed=4)
  boxes = _random_boxes(np.random.default_rng(3), 1, 4, -0.7, 0.7)
  ref, covered = torch_inverse.invert(grid, _dense_boundary(boxes, 400).reshape(1, -1, 2))
  assert covered.all()
  ref = ref.numpy().reshape(1, 4, -1, 2)
  expected = np.concatenate([ref.min(2), ref.max(2)], -1)
  warped, box_covered = sj.warp_boxes(boxes, grid, samples=64)
  assert np.all(np.asarray(box_covered))
  # The inverse image of an edge is piecewise smooth with kinks at the cells' edges, which the
  # samples miss: the sampled box lies inside the dense one and approaches it as samples grow.
  errors = []
  for samples in (8, 64):
    warped = np.asarray(sj.warp_boxes(boxes, grid, samples=samples)[0])
    assert np.all(warped[..., :2] >= expected[..., :2] - 1e-5)
    assert np.all(warped[..., 2:] <= expected[..., 2:] + 1e-5)
    errors.append(np.abs(warped - expected).max())
  assert errors[1] < 5e-4 and errors[1] < errors[0] / 4


def test_boxes_exact_round_trip_on_axis_aligned_grid():
  rng = np.random.default_rng(5)
  px = np.sort(np.concatenate([[-1, 1], rng.uniform(-1, 1, 7)]))
  py = np.sort(np.concatenate([[-1, 1], rng.uniform(-1, 1, 5)]))
  grid = np.stack(np.broadcast_arrays(px[None, None, :], py[None, :, None]), -1).astype(np.float32)
  boxes = _random_boxes(rng, 1, 6, -0.95, 0.95)
  warped, covered = sj.warp_boxes(boxes, grid, samples=2, axis_aligned=True)
  assert np.all(np.asarray(covered))
  # Separable and monotone: the box's corners map to the warped box's corners (np.interp).
  nodes_x, nodes_y = np.linspace(-1, 1, 9), np.linspace(-1, 1, 7)
  expected = np.stack([np.interp(boxes[..., 0], px, nodes_x),
                       np.interp(boxes[..., 1], py, nodes_y),
                       np.interp(boxes[..., 2], px, nodes_x),
                       np.interp(boxes[..., 3], py, nodes_y)], -1)
  np.testing.assert_allclose(np.asarray(warped), expected, atol=1e-5)
  np.testing.assert_allclose(np.asarray(sj.unwarp_boxes(warped, grid)), boxes, atol=1e-5)


def test_gradients_finite_and_jit_matches_eager():
  grid = jnp.asarray(smooth_grid(2, 5, 5, amp=0.05, seed=6))
  boxes = jnp.asarray(_random_boxes(np.random.default_rng(6), 2, 3))
  loss = lambda g, b: (jnp.sum(sj.warp_boxes(b, g, samples=8)[0])
                       + jnp.sum(sj.unwarp_boxes(b, g)))
  grads = jax.grad(loss, argnums=(0, 1))(grid, boxes)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
  np.testing.assert_array_equal(np.asarray(jax.jit(sj.unwarp_boxes)(boxes, grid)),
                                np.asarray(sj.unwarp_boxes(boxes, grid)))


def test_bad_input():
  grid = smooth_grid(2, 5, 5)
  with pytest.raises(ValueError, match="batch"):
    sj.warp_points(np.zeros((3, 4, 2), np.float32), grid)
  with pytest.raises(ValueError, match="shape"):
    sj.unwarp_boxes(np.zeros((2, 4, 3), np.float32), grid)
  with pytest.raises(ValueError, match="samples"):
    sj.warp_boxes(np.zeros((2, 4, 4), np.float32), grid, samples=1)


def test_vmap_matches_loop():
  grid = smooth_grid(3, 5, 6, amp=0.05, seed=7)
  points = np.random.default_rng(7).uniform(-0.8, 0.8, (3, 10, 2)).astype(np.float32)
  vmapped = jax.vmap(lambda p, g: sj.warp_points(p[None], g[None])[0][0])(points, grid)
  looped = np.concatenate([np.asarray(sj.warp_points(points[i:i + 1], grid[i:i + 1])[0])
                           for i in range(3)])
  np.testing.assert_allclose(np.asarray(vmapped), looped, atol=1e-6)
  vmapped = jax.vmap(lambda b, g: sj.unwarp_boxes(b[None], g[None])[0])(
      np.concatenate([points, points + 0.1], -1), grid)
  looped = np.concatenate([np.asarray(sj.unwarp_boxes(
      np.concatenate([points, points + 0.1], -1)[i:i + 1], grid[i:i + 1])) for i in range(3)])
  np.testing.assert_allclose(np.asarray(vmapped), looped, atol=1e-6)
