"""Axis-aligned attraction: each axis of the grid from the saliency's marginal on that axis.

The variant of LZU ("Learning to Zoom and Unzoom", CVPR 2023) and FOVEA (ICCV 2021): `x` of the
grid is the 1-D Gaussian attraction of the column marginal `sum_i S(i, j)`, and `y` that of the
row marginal `sum_j S(i, j)`, with the same kernel, padding and coordinates as
`attraction_grid`'s 2-D attraction (`u(a) = sum_j k(a - j) m(j) x(j) / sum_j k(a - j) m(j)` over
the padded marginal `m`). So `x` depends only on the column and `y` only on the row: the grid is
axis-aligned, rows and columns stay straight, and it is monotone (a Gaussian-weighted centre of
mass moves with its window), so `invert_grid(..., axis_aligned=True)` inverts it exactly.

This is not `attraction_grid(method="separable")`, which computes the ordinary 2-D attraction
(whose `x` varies along a column) with separable matrix products.
"""

import functools

import jax
import jax.numpy as jnp

from saliency_jax.ops import attraction
from saliency_jax.ops import resize

_HIGHEST = jax.lax.Precision.HIGHEST


def _axis(marginal, out_size, fwhm, padding, pad_mode):
  """`[B, g]` marginal -> `[B, out_size]` coordinates in [-1, 1] along that axis."""
  size = marginal.shape[-1]
  matrices = jnp.asarray(attraction._separable_matrices(size, padding, fwhm, pad_mode),
                         jnp.float32)
  den = jnp.einsum("ai,bi->ba", matrices[0], marginal, precision=_HIGHEST)
  num = jnp.einsum("ai,bi->ba", matrices[1], marginal, precision=_HIGHEST)
  coarse = jnp.clip(2.0 * attraction._centre_of_mass(num, den) - 1.0, -1.0, 1.0)
  # The same half-pixel upsampling as the 2-D grid's.
  up = jnp.asarray(resize.bilinear_matrix(size, out_size), jnp.float32)
  return jnp.einsum("oi,bi->bo", up, coarse, precision=_HIGHEST)


@functools.partial(jax.jit, static_argnames=("out_shape", "fwhm", "padding", "pad_mode"))
def axis_aligned_grid(saliency, out_shape, fwhm, padding, pad_mode):
  """`[B, gh, gw]` non-negative map -> `[B, h, w, 2]` axis-aligned grid (arguments checked by
  `attraction_grid`)."""
  saliency = attraction._normalise(saliency.astype(jnp.float32))
  b = saliency.shape[0]
  h, w = out_shape
  x = _axis(jnp.sum(saliency, axis=1), w, fwhm, padding, pad_mode)
  y = _axis(jnp.sum(saliency, axis=2), h, fwhm, padding, pad_mode)
  return jnp.stack([jnp.broadcast_to(x[:, None, :], (b, h, w)),
                    jnp.broadcast_to(y[:, :, None], (b, h, w))], axis=-1)
