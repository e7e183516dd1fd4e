"""magnification against numpy.gradient, and the attraction grid's magnification cap."""

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.ops import local_magnification as mag
from tests.test_inverse import lattice_targets
from tests.test_inverse import smooth_grid


def _numpy_magnification(grid, source_shape):
  """1 / sqrt(|det J|), J by numpy.gradient in source pixels per output pixel (align_corners)."""
  hs, ws = source_shape
  x = (grid[..., 0].astype(np.float64) + 1) / 2 * (ws - 1)
  y = (grid[..., 1].astype(np.float64) + 1) / 2 * (hs - 1)
  xv, xu = np.gradient(x, axis=(1, 2))
  yv, yu = np.gradient(y, axis=(1, 2))
  return 1 / np.sqrt(np.abs(xu * yv - xv * yu))


def _peaked_saliency(b, size, seed, temperature=0.3):
  logits = np.random.default_rng(seed).normal(size=(b, size, size))
  return sj.softmax_saliency(jnp.asarray(logits, jnp.float32), temperature=temperature)


def test_magnification_matches_numpy_gradient():
  grid = smooth_grid(2, 9, 11, amp=0.07, seed=1)
  np.testing.assert_allclose(np.asarray(sj.magnification(grid, (50, 70))),
                             _numpy_magnification(grid, (50, 70)), rtol=1e-5)


def test_uniform_and_zoom():
  ident = lattice_targets(8, 10)[None].astype(np.float32)
  # A uniform grid from 36 x 46 to 8 x 10 shows sqrt(7 * 9 / (35 * 45)) output pixels per source
  # pixel; relative to uniform it is 1; half the field of view doubles it.
  np.testing.assert_allclose(np.asarray(sj.magnification(ident, (36, 46))),
                             np.sqrt(7 * 9 / (35 * 45)), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(sj.magnification(ident, None)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(sj.magnification(0.5 * ident, None)), 2.0, rtol=1e-5)
  # Flat (degenerate) grids are infinitely magnified.
  assert np.all(np.isinf(np.asarray(sj.magnification(np.zeros((1, 3, 3, 2), np.float32), None))))


@pytest.mark.parametrize("cap", [1.0, 1.5, 3.0])
def test_cap_holds_and_is_tight_on_peaked_maps(cap):
  saliency = _peaked_saliency(3, 11, seed=int(cap * 10))
  plain = sj.attraction_grid(saliency, (40, 40))
  capped = sj.attraction_grid(saliency, (40, 40), max_magnification=cap)
  plain_mag = np.asarray(sj.magnification(plain, None)).max(axis=(1, 2))
  capped_mag = np.asarray(sj.magnification(capped, None)).max(axis=(1, 2))
  assert np.all(plain_mag > cap)  # The cap binds on these maps.
  assert np.all(capped_mag <= cap)
  # The least blending: the cap is reached (up to the margin that absorbs rounding).
  np.testing.assert_allclose(capped_mag, cap, rtol=2e-3)
  # The result is the stated blend: (1 - lam) grid + lam identity with one lam per image.
  ident = lattice_targets(40, 40)[None]
  lam = (np.asarray(capped) - np.asarray(plain))[..., 0].sum((1, 2)) / (
      ident - np.asarray(plain))[..., 0].sum((1, 2))
  np.testing.assert_allclose(np.asarray(capped),
                             (1 - lam)[:, None, None, None] * np.asarray(plain)
                             + lam[:, None, None, None] * ident, atol=1e-5)


def test_the_source_cap_samples_no_finer_than_the_source():
  """`saliency_sample(..., max_magnification="source")`: at most one output pixel per source
  pixel, measured by `_numpy_magnification` in source pixels; without the cap the same peaked
  maps magnify past the source."""
  logits = 3.0 * np.random.default_rng(3).normal(size=(2, 11, 11)).astype(np.float32)
  images = np.zeros((2, 96, 160, 3), np.float32)
  out_shape = (24, 40)  # 4x fewer pixels on each side: the cap is 4 times uniform sampling.
  _, plain, _ = sj.saliency_sample(images, logits, out_shape, align_corners=True)
  _, capped, _ = sj.saliency_sample(images, logits, out_shape, align_corners=True,
                                    max_magnification="source")
  # Interior nodes: numpy.gradient is one-sided at the border.
  interior = (slice(None), slice(1, -1), slice(1, -1))
  with np.errstate(divide="ignore"):  # The uncapped grid has degenerate (point-like) cells.
    plain_mag = _numpy_magnification(np.asarray(plain), (96, 160))[interior]
    capped_mag = _numpy_magnification(np.asarray(capped), (96, 160))[interior]
  assert np.mean(plain_mag > 1.0) > 0.05
  assert capped_mag.max() <= 1.0 + 2e-2
  _, explicit, _ = sj.saliency_sample(images, logits, out_shape, align_corners=True,
                                      max_magnification=4.0)
  np.testing.assert_array_equal(capped, explicit)
  with pytest.raises(ValueError, match="max_magnification must be None, a number of at least "
                                       "1 or 'source'; got 'full'."):
    sj.saliency_sample(images, logits, out_shape, max_magnification="full")


def test_cap_leaves_mild_grids_alone_and_is_differentiable():
  saliency = sj.softmax_saliency(jnp.asarray(
      0.1 * np.random.default_rng(0).normal(size=(2, 9, 9)), jnp.float32))
  plain = sj.attraction_grid(saliency, (24, 24))
  big_cap = float(np.asarray(sj.magnification(plain, None)).max()) * 1.1
  np.testing.assert_array_equal(
      np.asarray(sj.attraction_grid(saliency, (24, 24), max_magnification=big_cap)),
      np.asarray(plain))
  f = lambda s: sj.attraction_grid(s, (12, 12), max_magnification=1.2)
  grads = jax.grad(lambda s: jnp.sum(f(s) ** 2))(_peaked_saliency(2, 7, seed=3))
  assert np.all(np.isfinite(np.asarray(grads)))
  grid = jnp.asarray(smooth_grid(1, 6, 6, amp=0.1, seed=2)) * 0.8
  jtu.check_grads(lambda g: mag.cap_magnification(g, 1.5), (grid,), order=1, modes=["rev"],
                  atol=2e-2, rtol=2e-2, eps=1e-3)


def test_bad_input():
  saliency = _peaked_saliency(1, 5, seed=0)
  with pytest.raises(ValueError, match="max_magnification"):
    sj.attraction_grid(saliency, (8, 8), max_magnification=0.9)
  with pytest.raises(ValueError, match="max_magnification"):
    mag.cap_magnification(np.zeros((1, 3, 3, 2), np.float32), float("nan"))
  with pytest.raises(ValueError, match="source_shape"):
    sj.magnification(np.zeros((1, 3, 3, 2), np.float32), (0, 3))
  with pytest.raises(ValueError, match="finite"):
    sj.magnification(np.full((1, 3, 3, 2), np.nan, np.float32), None)
  # Under jit, NaN propagates to that image's magnification.
  grid = np.stack([lattice_targets(3, 3), np.full((3, 3, 2), np.nan)]).astype(np.float32)
  out = np.asarray(jax.jit(lambda g: sj.magnification(g, None))(grid))
  assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))
