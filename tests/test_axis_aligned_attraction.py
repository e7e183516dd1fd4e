"""The axis-aligned attraction grid against a NumPy evaluation of the 1-D attraction formula.

Reference: for each axis, the marginal of the map padded by replicating its ends, the Gaussian
`exp(-4 ln2 d^2 / fwhm^2)` on the window, `u(a) = sum k m x / sum k m` with `x = (j - p) / (g - 1)`,
`clip(2u - 1, -1, 1)`, then the half-pixel linear upsampling written with np.interp.
"""

import jax
import jax.numpy as jnp
import numpy as np

import saliency_jax as sj


def _numpy_axis(marginal, out, fwhm=13.0, padding=30):
  g = marginal.shape[-1]
  padded = marginal[np.clip(np.arange(-padding, g + padding), 0, g - 1)]
  coords = (np.arange(g + 2 * padding) - padding) / (g - 1)
  d = np.arange(-padding, padding + 1)
  kernel = np.exp(-4 * np.log(2) * d ** 2 / fwhm ** 2)
  u = np.array([np.sum(kernel * padded[a:a + 2 * padding + 1] * coords[a:a + 2 * padding + 1])
                / np.sum(kernel * padded[a:a + 2 * padding + 1]) for a in range(g)])
  coarse = np.clip(2 * u - 1, -1, 1)
  src = np.maximum((np.arange(out) + 0.5) * g / out - 0.5, 0)
  return np.interp(src, np.arange(g), coarse)


def _saliency(seed, b=2, gh=9, gw=11):
  logits = np.random.default_rng(seed).normal(size=(b, gh, gw))
  return np.asarray(sj.softmax_saliency(jnp.asarray(logits, jnp.float32), temperature=0.5))


def test_matches_numpy_marginal_attraction():
  saliency = _saliency(0)
  grid = np.asarray(sj.attraction_grid(saliency, (20, 24), axis_aligned=True, padding=10,
                                       fwhm=5.0))
  for b in range(2):
    np.testing.assert_allclose(grid[b, 3, :, 0], _numpy_axis(saliency[b].sum(0), 24, 5.0, 10),
                               atol=1e-5)
    np.testing.assert_allclose(grid[b, :, 5, 1], _numpy_axis(saliency[b].sum(1), 20, 5.0, 10),
                               atol=1e-5)
  # Axis-aligned: x constant down the columns, y along the rows; monotone.
  assert np.all(grid[..., 0] == grid[:, :1, :, 0]) and np.all(grid[..., 1] == grid[:, :, :1, 1])
  assert np.all(np.diff(grid[:, 0, :, 0], axis=-1) >= 0)
  assert np.all(np.diff(grid[:, :, 0, 1], axis=-1) >= 0)


def test_uniform_map_is_identity_and_differs_from_2d_attraction():
  ones = np.ones((1, 7, 7), np.float32)
  grid = np.asarray(sj.attraction_grid(ones, (7, 7), axis_aligned=True))
  plain = np.asarray(sj.attraction_grid(ones, (7, 7)))
  np.testing.assert_allclose(grid, plain, atol=1e-6)
  saliency = _saliency(1)
  assert np.abs(np.asarray(sj.attraction_grid(saliency, (16, 16), axis_aligned=True))
                - np.asarray(sj.attraction_grid(saliency, (16, 16)))).max() > 1e-2


def test_exactly_invertible_by_the_fast_path():
  saliency = _saliency(2)
  grid = sj.attraction_grid(saliency, (32, 32), axis_aligned=True, max_magnification=2.0)
  inverse, covered = sj.invert_grid(grid, (40, 40), axis_aligned=True)
  general, general_covered = sj.invert_grid(grid, (40, 40))
  np.testing.assert_array_equal(np.asarray(covered), np.asarray(general_covered))
  c = np.asarray(covered)
  np.testing.assert_allclose(np.asarray(inverse)[c], np.asarray(general)[c], atol=2e-5)
  # The inverse composed with the grid gives back the source position.
  back = sj.unwarp_points(np.asarray(inverse).reshape(2, -1, 2), grid)
  ys, xs = np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-1, 1, 40), indexing="ij")
  target = np.broadcast_to(np.stack([xs, ys], -1).reshape(1, -1, 2), back.shape)
  np.testing.assert_allclose(np.asarray(back)[c.reshape(2, -1)], target[c.reshape(2, -1)],
                             atol=1e-5)
  assert np.all(np.asarray(sj.magnification(grid, None)) <= 2.0)


def test_gradients_finite():
  saliency = jnp.asarray(_saliency(3))
  grads = jax.grad(lambda s: jnp.sum(sj.attraction_grid(s, (8, 8), axis_aligned=True) ** 3))(
      saliency)
  assert np.all(np.isfinite(np.asarray(grads))) and np.abs(np.asarray(grads)).max() > 0
