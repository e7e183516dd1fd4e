"""Anti-aliased grid_sample against supersampled footprints (the independent reference).

Reference: each output pixel's footprint is the parallelogram spanned by the grid's local
Jacobian (central differences, in source pixels per output pixel); the reference value is the
mean of 16 x 16 plain bilinear point samples spread evenly over it. The test image is a zone
plate, whose local frequency grows to the Nyquist limit at its corners, so plain sampling
aliases wherever the grid compresses.
"""

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from tests.references.supersampling import supersampled, zone_plate


def lattice(h, w):
  ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
  return np.stack([xs, ys], -1)[None].astype(np.float32)


def _rms(a, b):
  return float(np.sqrt(np.mean((a - b) ** 2)))


def test_uniform_8x_error_at_least_halved():
  image = zone_plate(256)
  grid = lattice(32, 32)  # 256 -> 32: 8x downsampling.
  reference = supersampled(image, grid)
  plain = np.asarray(sj.grid_sample(image, grid, align_corners=True))
  smooth = np.asarray(sj.grid_sample(image, grid, align_corners=True, antialias=True))
  assert _rms(smooth, reference) < 0.5 * _rms(plain, reference)


def test_peaked_map_error_at_least_halved():
  image = zone_plate(256)
  saliency = np.full((1, 15, 15), 0.02, np.float32)
  saliency[0, 4:7, 8:11] = 1.0
  grid = np.asarray(sj.attraction_grid(saliency / saliency.sum(), (48, 48)))
  reference = supersampled(image, grid)
  plain = np.asarray(sj.grid_sample(image, grid, align_corners=True))
  smooth = np.asarray(sj.grid_sample(image, grid, align_corners=True, antialias=True))
  assert _rms(smooth, reference) < 0.5 * _rms(plain, reference)


@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_no_blur_where_magnified(padding_mode):
  # 48 px of source onto 96 output pixels: denser than the source everywhere -> plain bilinear.
  image = np.random.default_rng(0).normal(size=(2, 48, 40, 3)).astype(np.float32)
  grid = 0.9 * lattice(96, 96) + 0.05
  grid = np.concatenate([grid, grid[:, ::-1]])
  for align_corners in (True, False):
    plain = sj.grid_sample(image, grid, align_corners=align_corners, padding_mode=padding_mode)
    smooth = sj.grid_sample(image, grid, align_corners=align_corners, padding_mode=padding_mode,
                            antialias=True)
    np.testing.assert_allclose(np.asarray(smooth), np.asarray(plain), atol=1e-5)


def test_uint8_matches_float_and_pyramid_is_area_mean():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
  grid = 0.95 * lattice(12, 10)
  grid = np.concatenate([grid, np.roll(grid, 1, axis=1)])
  as_u8 = np.asarray(sj.grid_sample(image, grid, align_corners=True, antialias=True))
  as_f32 = np.asarray(sj.grid_sample(image.astype(np.float32), grid, align_corners=True,
                                     antialias=True))
  # A uint8 image's levels are its exact area means, as a float image's are (not rounded to
  # grey levels): the same values to float32 rounding; this ~5x compression reads levels 2, 3.
  assert as_u8.dtype == np.float32
  np.testing.assert_allclose(as_u8, as_f32, atol=1e-3)
  # A 4x compression centred on 4x4 blocks reads level 2, the block means (NumPy).
  blocks = image.astype(np.float64).reshape(2, 16, 4, 12, 4, 3).mean(axis=(2, 4))
  centres = lattice(16, 12)
  centres = np.stack([((np.arange(12) * 4 + 1.5) / 47 * 2 - 1)[None, :].repeat(16, 0),
                      ((np.arange(16) * 4 + 1.5) / 63 * 2 - 1)[:, None].repeat(12, 1)], -1)
  out = np.asarray(sj.grid_sample(image.astype(np.float32), np.repeat(centres[None], 2, 0),
                                  align_corners=True, antialias=True))
  np.testing.assert_allclose(out[:, 1:-1, 1:-1], blocks[:, 1:-1, 1:-1], atol=1e-3)


def test_gradients_reach_the_grid_and_jit_vmap():
  image = jnp.asarray(zone_plate(64))
  grid = jnp.asarray(0.8 * lattice(10, 10) + 0.03)  # ~5x compression: between levels 2 and 3.
  f = lambda g: sj.grid_sample(image, g, align_corners=True, antialias=True)
  jtu.check_grads(f, (grid,), order=1, modes=["rev"], atol=5e-2, rtol=5e-2, eps=1e-4)
  # The level weights contribute: scaling the grid about its centre changes only the footprint
  # there, and the centre pixel's value responds.
  centre = lambda s: f(grid * s)[0, 5, 5, 0]
  assert abs(float(jax.grad(centre)(1.0))) > 0
  batch = jnp.concatenate([grid, grid[:, ::-1]])
  images = jnp.concatenate([image, image[:, ::-1]])
  eager = sj.grid_sample(images, batch, antialias=True)
  np.testing.assert_allclose(
      np.asarray(jax.jit(lambda i, g: sj.grid_sample(i, g, antialias=True))(images, batch)),
      np.asarray(eager), atol=1e-6)
  vmapped = jax.vmap(lambda i, g: sj.grid_sample(i[None], g[None], antialias=True)[0])(images,
                                                                                      batch)
  np.testing.assert_allclose(np.asarray(vmapped), np.asarray(eager), atol=1e-6)


def test_saliency_sample_passes_antialias():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
  logits = jnp.asarray(rng.normal(size=(2, 7, 7)), jnp.float32)
  sampled, grid, _ = sj.saliency_sample(image, logits, (16, 16), antialias=True)
  np.testing.assert_allclose(
      np.asarray(sampled),
      np.asarray(sj.grid_sample(image, grid, align_corners=True, antialias=True)), atol=1e-5)
  with pytest.raises(ValueError, match="antialias"):
    sj.grid_sample(image, grid, antialias="yes")
