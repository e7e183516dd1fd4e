"""Parametric sampling grids: an affine map and a thin-plate spline (the paper's STN baselines).

Grids follow `grid_sample`'s convention: `[B, h, w, 2]`, output pixel `(i, j)` reads the source
point `(x, y)` in normalised coordinates `[-1, 1]`; the output pixels' own positions follow
`align_corners` (True: the corner pixels' centres at +-1; False: the corner pixels' outer edges
at +-1), as `torch.nn.functional.affine_grid`. The identity map gives the uniform grid.
"""

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import validation


def _positions(size: int, align_corners: bool) -> jax.Array:
  """`[size]` normalised positions of the output pixels along one axis."""
  if align_corners:
    return jnp.linspace(-1.0, 1.0, size)
  return (2.0 * jnp.arange(size) + 1.0) / size - 1.0


def _output_positions(out_shape: Sequence[int], align_corners: bool) -> jax.Array:
  """`[h, w, 2]` the `(x, y)` positions of the output pixels."""
  h, w = validation.check_shape(out_shape, "out_shape")
  x, y = jnp.meshgrid(_positions(w, align_corners), _positions(h, align_corners))
  return jnp.stack([x, y], axis=-1)


def affine_grid(theta: jax.Array, out_shape: Sequence[int], *,
                align_corners: bool = False) -> jax.Array:
  """The sampling grid of an affine map (`torch.nn.functional.affine_grid`, NHWC).

  Args:
    theta: `[B, 2, 3]` maps each output position `(x, y, 1)` to its source point `(x, y)`.
    out_shape: `(h, w)` of the output.
    align_corners: the output pixels' positions (see the module docstring).

  Returns:
    `[B, h, w, 2]` float32 grid.
  """
  theta = jnp.asarray(theta)
  if theta.ndim != 3 or theta.shape[1:] != (2, 3):
    raise ValueError(f"theta must have shape [batch, 2, 3]; got shape {theta.shape}.")
  align_corners = validation.check_bool(align_corners, "align_corners")
  positions = _output_positions(out_shape, align_corners)
  homogeneous = jnp.concatenate([positions, jnp.ones_like(positions[..., :1])], axis=-1)
  return jnp.einsum("hwk,bdk->bhwd", homogeneous, theta.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def control_lattice(points_per_side: int) -> np.ndarray:
  """`[n * n, 2]` control points `(x, y)` on a regular lattice spanning `[-1, 1]^2`, row-major."""
  n = validation.check_int(points_per_side, "points_per_side", minimum=2)
  coords = np.linspace(-1.0, 1.0, n)
  x, y = np.meshgrid(coords, coords)
  return np.stack([x.ravel(), y.ravel()], axis=-1)


def _radial(squared_distance):
  """The thin-plate spline kernel `U = r^2 log r^2`, with U(0) = 0 (NumPy or JAX arrays)."""
  xp = jnp if isinstance(squared_distance, jax.Array) else np
  positive = squared_distance > 0
  return xp.where(positive, squared_distance * xp.log(xp.where(positive, squared_distance, 1.0)),
                  0.0)


@functools.lru_cache(maxsize=16)
def _solver(points_per_side: int) -> np.ndarray:
  """`[K + 3, K]`: maps the K lattice points' source positions to the spline's coefficients.

  The spline `f(q) = a0 + a1 x + a2 y + sum_k w_k U(|q - q_k|)` interpolating `f(q_k) = p_k` has
  `[w; a] = L^-1 [p; 0]` with `L = [[U(|q_i - q_j|), Q], [Q^T, 0]]`, `Q` rows `(1, x_k, y_k)`.
  `L` depends only on the fixed lattice, so its inverse is a constant.
  """
  lattice = control_lattice(points_per_side)
  k = len(lattice)
  affine = np.concatenate([np.ones((k, 1)), lattice], axis=1)
  system = np.zeros((k + 3, k + 3))
  system[:k, :k] = _radial(np.sum((lattice[:, None] - lattice[None]) ** 2, axis=-1))
  system[:k, k:] = affine
  system[k:, :k] = affine.T
  return np.linalg.inv(system)[:, :k]


def tps_grid(control_points: jax.Array, out_shape: Sequence[int], *,
             align_corners: bool = False) -> jax.Array:
  """The sampling grid of the thin-plate spline through the lattice of `control_lattice(n)`.

  Args:
    control_points: `[B, n * n, 2]` the source points `(x, y)` that the lattice points map to
      (n >= 2); the lattice itself gives the identity grid.
    out_shape: `(h, w)` of the output.
    align_corners: the output pixels' positions (see the module docstring).

  Returns:
    `[B, h, w, 2]` float32 grid.
  """
  control_points = jnp.asarray(control_points)
  if control_points.ndim != 3 or control_points.shape[-1] != 2:
    raise ValueError(f"control_points must have shape [batch, n * n, 2]; got shape "
                     f"{control_points.shape}.")
  num_points = control_points.shape[1]
  per_side = int(round(num_points ** 0.5))
  if per_side * per_side != num_points or per_side < 2:
    raise ValueError(f"control_points must hold n * n points with n >= 2; got {num_points}.")
  align_corners = validation.check_bool(align_corners, "align_corners")
  positions = _output_positions(out_shape, align_corners)
  h, w = positions.shape[:2]
  positions = positions.reshape(-1, 2)
  lattice = jnp.asarray(control_lattice(per_side), jnp.float32)
  squared = jnp.sum((positions[:, None, :] - lattice[None]) ** 2, axis=-1)
  basis = jnp.concatenate([_radial(squared), jnp.ones_like(positions[:, :1]), positions], -1)
  weights = basis @ jnp.asarray(_solver(per_side), jnp.float32)  # [h * w, K]
  grid = jnp.einsum("pk,bkd->bpd", weights, control_points.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)
  return grid.reshape(control_points.shape[0], h, w, 2)
