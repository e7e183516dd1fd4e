"""The affine and thin-plate-spline grids (`ops.parametric`).

References: `torch.nn.functional.affine_grid` for the affine grid; the defining properties of
the thin-plate spline (it interpolates its control points and reproduces affine maps exactly,
so that affine control points give `affine_grid`'s grid).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import saliency_jax as sj


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("out_shape", [(9, 9), (5, 7)])
def test_affine_grid_matches_pytorch(align_corners, out_shape):
  theta = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
  expected = F.affine_grid(torch.from_numpy(theta), (3, 1, *out_shape),
                           align_corners=align_corners)
  grid = sj.affine_grid(jnp.asarray(theta), out_shape, align_corners=align_corners)
  np.testing.assert_allclose(grid, expected.numpy(), atol=1e-6)


def test_thin_plate_spline_interpolates_and_reproduces_affine_maps():
  lattice = sj.control_lattice(4)
  # With align_corners=True and 4 output pixels per side, the pixels sit on the lattice.
  identity = sj.tps_grid(jnp.asarray(lattice[None], jnp.float32), (4, 4), align_corners=True)
  np.testing.assert_allclose(identity.reshape(16, 2), lattice, atol=1e-5)
  # An affine map of the control points gives that affine map everywhere (zero bending).
  a = np.array([[0.8, 0.1], [-0.2, 0.6]])
  t = np.array([0.05, -0.1])
  moved = lattice @ a.T + t
  for out_shape in ((11, 11), (6, 9)):
    grid = sj.tps_grid(jnp.asarray(moved[None], jnp.float32), out_shape, align_corners=False)
    theta = np.concatenate([a, t[:, None]], axis=1)[None].astype(np.float32)
    expected = F.affine_grid(torch.from_numpy(theta), (1, 1, *out_shape), align_corners=False)
    np.testing.assert_allclose(grid, expected.numpy(), atol=1e-5)
  # Arbitrary control points are interpolated exactly.
  points = lattice + np.random.default_rng(1).uniform(-0.2, 0.2, lattice.shape)
  grid = sj.tps_grid(jnp.asarray(points[None], jnp.float32), (4, 4), align_corners=True)
  np.testing.assert_allclose(grid.reshape(16, 2), points, atol=1e-5)


def test_jit_vmap_and_gradients():
  rng = np.random.default_rng(2)
  theta = jnp.asarray(rng.standard_normal((2, 2, 3)), jnp.float32)
  points = jnp.asarray(sj.control_lattice(3)[None] + rng.uniform(-0.1, 0.1, (2, 9, 2)),
                       jnp.float32)
  for fn, arg in ((sj.affine_grid, theta), (sj.tps_grid, points)):
    eager = fn(arg, (5, 6))
    np.testing.assert_allclose(jax.jit(fn, static_argnums=1)(arg, (5, 6)), eager, atol=1e-6)
    looped = jnp.concatenate([fn(arg[i:i + 1], (5, 6)) for i in range(2)])
    mapped = jax.vmap(lambda a: fn(a[None], (5, 6))[0])(arg)
    np.testing.assert_allclose(mapped, looped, atol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(fn(a, (5, 6)) ** 2))(arg)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match=r"theta must have shape \[batch, 2, 3\]"):
    sj.affine_grid(jnp.zeros((2, 3)), (4, 4))
  with pytest.raises(ValueError, match="out_shape must be a pair"):
    sj.affine_grid(jnp.zeros((1, 2, 3)), 4)
  with pytest.raises(ValueError, match="n \\* n points with n >= 2"):
    sj.tps_grid(jnp.zeros((1, 5, 2)), (4, 4))
  with pytest.raises(ValueError, match="control_points must have shape"):
    sj.tps_grid(jnp.zeros((4, 2)), (4, 4))
  with pytest.raises(ValueError, match="points_per_side must be an int >= 2"):
    sj.control_lattice(1)
  with pytest.raises(ValueError, match="align_corners must be True or False"):
    sj.affine_grid(jnp.zeros((1, 2, 3)), (4, 4), align_corners="yes")
