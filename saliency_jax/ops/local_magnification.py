"""Local magnification of a sampling grid, and a cap on it.

The grid maps output pixel `(i, j)` to source point `grid[b, i, j]`. Its Jacobian `J` (source
pixels per output pixel) is taken by finite differences over the grid's nodes: central
differences inside, one-sided ones on the border rows and columns (as `numpy.gradient`). The
magnification is the linear one, `1 / sqrt(|det J|)`: output pixels per source pixel, the square
root of the areal magnification (per-axis stretches are not reported separately). A uniform grid
from an `Hs x Ws` source to an `h x w` output has `sqrt((h - 1)(w - 1) / ((Hs - 1)(Ws - 1)))` with
align_corners=True source coordinates.

The cap blends the grid with the identity grid `I` (the uniform sampling): `(1 - lam) G + lam I`.
The Jacobian of the blend is `(1 - lam) J + lam 1` (in normalised units the identity's Jacobian
is the unit matrix), so its determinant `(1 - lam)^2 det J + lam (1 - lam) tr J + lam^2` is a
quadratic in `lam`, and the smallest `lam` per node beyond which it stays above `1 / m^2` (for a
cap `m` relative to uniform) is the largest root of that quadratic in [0, 1], in closed form. The
per-image `lam` is the maximum over the nodes: the least blending that satisfies the cap
everywhere, so the grid is kept exactly where it already does. It is differentiable (a root and
a maximum); the divisions and the square root are guarded on both sides of a `where`.
"""

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import validation

# The cap is met with this relative margin, so that float32 rounding of the blend cannot push
# the measured magnification above it.
_MARGIN = 1e-4


def _differences(values: jax.Array, axis: int) -> jax.Array:
  """`numpy.gradient` along `axis` (unit spacing): central inside, one-sided at the ends."""
  n = values.shape[axis]
  take = lambda start, stop: jax.lax.slice_in_dim(values, start, stop, axis=axis)
  if n == 2:
    d = take(1, 2) - take(0, 1)
    return jnp.concatenate([d, d], axis=axis)
  inner = (take(2, n) - take(0, n - 2)) * 0.5
  return jnp.concatenate([take(1, 2) - take(0, 1), inner, take(n - 1, n) - take(n - 2, n - 1)],
                         axis=axis)


def normalised_jacobian(grid: jax.Array):
  """`(dx/du, dx/dv, dy/du, dy/dv)`, each `[B, h, w]`: the grid's derivatives with respect to the
  normalised output position `(u, v)` (node spacing `2 / (w - 1)`, `2 / (h - 1)`)."""
  _, h, w, _ = grid.shape
  du, dv = 2.0 / (w - 1), 2.0 / (h - 1)
  x, y = grid[..., 0], grid[..., 1]
  return (_differences(x, 2) / du, _differences(x, 1) / dv,
          _differences(y, 2) / du, _differences(y, 1) / dv)


def _inverse_sqrt(value):
  positive = value > 0
  return jnp.where(positive, jax.lax.rsqrt(jnp.where(positive, value, 1.0)),
                   jnp.where(jnp.isnan(value), jnp.nan, jnp.inf))


@functools.partial(jax.jit, static_argnames=("scale",))
def _magnification(grid, scale):
  xu, xv, yu, yv = normalised_jacobian(grid.astype(jnp.float32))
  return _inverse_sqrt(jnp.abs(xu * yv - xv * yu) * scale)


def magnification(grid: jax.Array, source_shape: Sequence[int] | None, *,
                  align_corners: bool = True) -> jax.Array:
  """The local linear magnification of a sampling grid: output pixels per source pixel.

  Args:
    grid: `[B, h, w, 2]` floating, `h, w >= 2`, a `grid_sample` grid.
    source_shape: `(Hs, Ws)` of the source image; None for the magnification relative to the
      uniform grid (1 = uniform sampling, the unit `attraction_grid`'s cap uses).
    align_corners: the convention the grid is sampled with (`saliency_sample` uses True).

  Returns:
    `[B, h, w]` float32 `1 / sqrt(|det J|)` (see the module docstring); infinity where the grid
    is locally degenerate (e.g. the flat rows at a grid's clamped border). Differentiable where
    finite. Under `jit`, NaN in the grid gives NaN there.

  Raises:
    ValueError: on a bad shape or `source_shape`, or (outside `jit`) a grid holding NaN.
  """
  grid = validation.check_grid(grid, min_nodes=2, finite=True)
  _, h, w, _ = grid.shape
  if source_shape is None:
    scale = 1.0
  else:
    source_h, source_w = validation.check_shape(source_shape, "source_shape")
    # Normalised source units -> source pixels, normalised output units -> output pixels.
    if align_corners:
      sx, sy = (source_w - 1) / 2.0, (source_h - 1) / 2.0
    else:
      sx, sy = source_w / 2.0, source_h / 2.0
    scale = sx * sy * 4.0 / ((w - 1) * (h - 1))
  return _magnification(grid, float(scale))


def identity_grid(h: int, w: int) -> np.ndarray:
  """`[h, w, 2]` the uniform grid on the align_corners=True lattice."""
  ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w), indexing="ij")
  return np.stack([xs, ys], axis=-1).astype(np.float32)


def _largest_root_in_unit(a, b, c):
  """The largest root of `a l^2 + b l + c` in [0, 1], or 0 if none (elementwise, finite)."""
  disc = b * b - 4.0 * a * c
  real = disc >= 0
  root = jnp.where(disc > 0, jnp.sqrt(jnp.where(disc > 0, disc, 1.0)), 0.0)
  quadratic = jnp.abs(a) > 1e-7 * (jnp.abs(b) + jnp.abs(c)) + 1e-30
  safe_a = jnp.where(quadratic, a, 1.0)
  roots_q = ((-b + root) / (2.0 * safe_a), (-b - root) / (2.0 * safe_a))
  linear = jnp.abs(b) > 1e-30
  root_l = jnp.where(linear, -c / jnp.where(linear, b, 1.0), 0.0)
  best = jnp.zeros_like(a)
  for r, ok in ((roots_q[0], quadratic & real), (roots_q[1], quadratic & real),
                (root_l, ~quadratic & linear)):
    # A root at 1 (a cap of exactly 1) may round to just above it.
    valid = ok & (r >= 0) & (r <= 1.0 + 1e-4)
    best = jnp.maximum(best, jnp.where(valid, r, 0.0))
  # Below the floor at 0 but no root found (lost to rounding): only the identity is safe.
  best = jnp.where((c < 0) & (best == 0), 1.0, best)
  return jnp.minimum(best, 1.0)


@jax.jit
def _blend_weight(grid, max_magnification):
  xu, xv, yu, yv = normalised_jacobian(grid)
  det = xu * yv - xv * yu
  trace = xu + yv
  # The identity (lam = 1) has det 1, so the floor is at most 1 for the root to exist.
  floor = jnp.minimum((1.0 + _MARGIN) / (max_magnification * max_magnification), 1.0)
  # det((1 - l) J + l 1) - floor = a l^2 + b l + c.
  a = det - trace + 1.0
  b = trace - 2.0 * det
  c = det - floor
  roots = _largest_root_in_unit(a, b, c).reshape(grid.shape[0], -1)
  # Gathered at the argmax, not reduced by `max`: see `warping._tight_box` (a reduction's
  # gradient compares the roots with their maximum again, which rounding can make unequal).
  return jnp.take_along_axis(roots, jnp.argmax(roots, axis=1)[:, None], axis=1)[:, 0]


@jax.jit
def _cap(grid, max_magnification):
  grid = grid.astype(jnp.float32)
  _, h, w, _ = grid.shape
  lam = _blend_weight(grid, max_magnification)[:, None, None, None]
  return (1.0 - lam) * grid + lam * jnp.asarray(identity_grid(h, w))


def cap(grid: jax.Array, max_magnification) -> jax.Array:
  """`cap_magnification` without the argument checks (for callers that made them)."""
  return _cap(grid, jnp.asarray(max_magnification, jnp.float32))


def cap_magnification(grid: jax.Array, max_magnification: float) -> jax.Array:
  """Blends `grid` with the uniform grid just enough that its magnification is at most the cap.

  Args:
    grid: `[B, h, w, 2]` floating, `h, w >= 2`.
    max_magnification: the cap relative to uniform sampling (`magnification(grid, None)`), at
      least 1 (uniform sampling has 1, so a smaller cap cannot be met).

  Returns:
    `[B, h, w, 2]` float32 `(1 - lam) grid + lam identity`, `lam [B]` the smallest per-image
    weight meeting the cap (0 where the grid already does; see the module docstring).
    Differentiable with respect to the grid (and the cap).

  Raises:
    ValueError: on a bad shape, a cap below 1 or not finite, or (outside `jit`) a grid holding
      NaN.
  """
  grid = validation.check_grid(grid, min_nodes=2, finite=True)
  check_cap(max_magnification)
  return cap(grid, max_magnification)


def check_cap(max_magnification) -> None:
  """Raises `ValueError` unless `max_magnification` is a number >= 1 (when concrete)."""
  value = validation.concrete_value(jnp.asarray(max_magnification))
  if value is None:
    return
  if value.shape != () or not np.isfinite(value) or value < 1:
    raise ValueError(f"max_magnification must be a finite number of at least 1 (relative to "
                     f"uniform sampling); got {max_magnification!r}.")
