"""The saliency priors: kde_saliency against a NumPy evaluation of the Gaussian mixture, box by
box; detail_saliency against NumPy variances over adaptive-pooling windows, pixel by pixel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj


def _numpy_kde(boxes, valid, gh, gw, bandwidth=0.05, box_scale=0.25, uniform_weight=0.1,
               box_mass="equal"):
  ys, xs = np.meshgrid(np.linspace(-1, 1, gh), np.linspace(-1, 1, gw), indexing="ij")
  out = []
  for image_boxes, image_valid in zip(boxes.astype(np.float64), valid):
    kept = image_boxes[image_valid]
    if len(kept) == 0:
      out.append(np.full((gh, gw), np.log(0.25)))
      continue
    density, total = np.zeros((gh, gw)), 0.0
    for x0, y0, x1, y1 in kept:
      sx = np.hypot(box_scale * (x1 - x0), bandwidth)
      sy = np.hypot(box_scale * (y1 - y0), bandwidth)
      # "inverse_area": each box's mass 1 / area, its sides at least the bandwidth.
      mass = (1.0 if box_mass == "equal"
              else 1.0 / (max(x1 - x0, bandwidth) * max(y1 - y0, bandwidth)))
      total += mass
      density += mass * np.exp(-0.5 * ((xs - (x0 + x1) / 2) / sx) ** 2
                               - 0.5 * ((ys - (y0 + y1) / 2) / sy) ** 2) / (2 * np.pi * sx * sy)
    density = (1 - uniform_weight) * density / total + uniform_weight / 4
    out.append(np.log(density))
  return np.stack(out)


def _boxes(rng, b, n):
  corners = rng.uniform(-1, 1, (b, n, 2, 2))
  return np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)


def test_matches_numpy_mixture_with_padding_and_zero_area():
  rng = np.random.default_rng(0)
  boxes = _boxes(rng, 3, 5)
  boxes[0, 1, 2:] = boxes[0, 1, :2]  # A zero-area box (a point).
  valid = np.ones((3, 5), bool)
  valid[1, 3:] = False  # Padding.
  boxes[1, 3:] = np.nan  # Whatever padding holds does not matter.
  valid[2] = False  # An image without boxes: the uniform prior.
  logits = np.asarray(sj.kde_saliency(boxes, (9, 13), valid=valid))
  np.testing.assert_allclose(logits, _numpy_kde(boxes, valid, 9, 13), rtol=1e-5, atol=1e-5)
  # Softmax of the logits is the density normalised over the cells; no boxes -> uniform grid.
  grid = sj.attraction_grid(sj.softmax_saliency(logits[2:]), (9, 13))
  ys, xs = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 13), indexing="ij")
  np.testing.assert_allclose(np.asarray(grid)[0], np.stack([xs, ys], -1), atol=1e-5)


def test_dataset_prior_and_gradients():
  rng = np.random.default_rng(1)
  boxes = _boxes(rng, 1, 40)[0]
  logits = sj.kde_saliency(boxes, (7, 7), bandwidth=0.1, box_scale=0.5, uniform_weight=0.3)
  assert logits.shape == (1, 7, 7)
  np.testing.assert_allclose(np.asarray(logits),
                             _numpy_kde(boxes[None], np.ones((1, 40), bool), 7, 7, 0.1, 0.5, 0.3),
                             rtol=1e-5, atol=1e-5)
  valid = jnp.asarray(np.arange(6) < 4)[None].repeat(2, 0)
  f = lambda b: jnp.sum(jnp.sin(sj.kde_saliency(b, (5, 6), valid=valid)))
  padded = jnp.asarray(_boxes(rng, 2, 6)).at[:, 4:, :].set(jnp.nan)
  grads = np.asarray(jax.grad(f)(padded))
  assert np.all(np.isfinite(grads)) and np.all(grads[:, 4:] == 0)
  jitted = jax.jit(lambda b: sj.kde_saliency(b, (5, 6)))(padded[:, :4])
  np.testing.assert_array_equal(np.asarray(jitted),
                                np.asarray(sj.kde_saliency(padded[:, :4], (5, 6))))


def test_inverse_area_shares_the_mass_in_inverse_proportion_to_the_boxes_areas():
  rng = np.random.default_rng(2)
  boxes = _boxes(rng, 3, 4)
  boxes[0, 2, 2:] = boxes[0, 2, :2]  # A zero-area box: its sides count as the bandwidth.
  boxes[0, 3, 2] = boxes[0, 3, 0] + 0.2  # A box thinner than the bandwidth, wider than it.
  boxes[0, 3, 3] = boxes[0, 3, 1] + 0.01
  valid = np.ones((3, 4), bool)
  valid[1, 2:] = False
  boxes[1, 2:] = np.nan
  valid[2] = False
  logits = sj.kde_saliency(boxes, (9, 13), valid=valid, box_mass="inverse_area")
  np.testing.assert_allclose(np.asarray(logits),
                             _numpy_kde(boxes, valid, 9, 13, box_mass="inverse_area"),
                             rtol=1e-5, atol=1e-5)
  # One small and one large box: the small one's share of the mass near it grows from about a
  # half ("equal") to about its area ratio, here 1 / (1 + (0.1 / 0.8)^2) of it.
  pair = np.array([[[-0.9, -0.9, -0.8, -0.8], [0.0, 0.0, 0.8, 0.8]]], np.float32)
  cells = np.linspace(-1, 1, 81)
  near_small = (cells < -0.5)[:, None] & (cells < -0.5)[None, :]
  shares = {}
  for box_mass in ("equal", "inverse_area"):
    density = np.exp(np.asarray(sj.kde_saliency(pair, (81, 81), box_mass=box_mass))[0])
    shares[box_mass] = density[near_small].sum() / density.sum()
  assert shares["equal"] == pytest.approx(0.9 * 0.5 + 0.1 * near_small.mean(), abs=0.01)
  assert shares["inverse_area"] == pytest.approx(0.9 * 64 / 65 + 0.1 * near_small.mean(),
                                                 abs=0.01)
  grads = jax.grad(lambda b: jnp.sum(jnp.sin(sj.kde_saliency(
      b, (5, 6), valid=jnp.asarray(valid[:2]), box_mass="inverse_area"))))(jnp.asarray(boxes[:2]))
  assert np.all(np.isfinite(np.asarray(grads))) and np.all(np.asarray(grads)[1, 2:] == 0)


def test_bad_input():
  boxes = np.zeros((2, 3, 4), np.float32)
  with pytest.raises(ValueError, match="boxes"):
    sj.kde_saliency(np.zeros((2, 3, 3), np.float32), (5, 5))
  with pytest.raises(ValueError, match="grid_shape"):
    sj.kde_saliency(boxes, (0, 5))
  with pytest.raises(ValueError, match="valid"):
    sj.kde_saliency(boxes, (5, 5), valid=np.ones((2, 2), bool))
  with pytest.raises(ValueError, match="bandwidth"):
    sj.kde_saliency(boxes, (5, 5), bandwidth=0.0)
  with pytest.raises(ValueError, match="uniform_weight"):
    sj.kde_saliency(boxes, (5, 5), uniform_weight=0.0)
  with pytest.raises(ValueError, match="box_mass"):
    sj.kde_saliency(boxes, (5, 5), box_mass="area")
  boxes[1, 0, 0] = np.nan
  with pytest.raises(ValueError, match="finite"):
    sj.kde_saliency(boxes, (5, 5))
  out = np.asarray(jax.jit(lambda b: sj.kde_saliency(b, (5, 5)))(boxes))
  assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))


@pytest.mark.parametrize("align_corners", [True, False])
def test_normalize_boxes_puts_pixel_centres_where_grid_sample_reads_them(align_corners):
  # The reference is grid_sample itself: on an image whose value is the column (x) or row (y)
  # index, a box edge on a pixel's centre (k + 0.5) must read k at its normalised position.
  height, width = 7, 12
  ramp = np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1).astype(np.float32)
  xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
  boxes = np.stack([xs[:height], ys, xs[::-1][:height], ys[::-1]], -1)
  normalised = np.asarray(sj.normalize_boxes(boxes, (height, width), align_corners=align_corners))
  corners = normalised.reshape(height, 2, 2)  # (x0, y0) and (x1, y1) of every box.
  read = np.asarray(sj.grid_sample(ramp[None], jnp.asarray(corners[None]),
                                   align_corners=align_corners))[0]
  np.testing.assert_allclose(read, boxes.reshape(height, 2, 2) - 0.5, atol=1e-4)
  # The whole image: its outer edges at -1 and 1 only with align_corners=False.
  whole = np.asarray(sj.normalize_boxes(np.array([0.0, 0, width, height]), (height, width),
                                        align_corners=align_corners))
  expected = [-1, -1, 1, 1] if not align_corners else [
      -1 - 1 / (width - 1), -1 - 1 / (height - 1), 1 + 1 / (width - 1), 1 + 1 / (height - 1)]
  np.testing.assert_allclose(whole, expected, rtol=1e-6)
  with pytest.raises(ValueError, match="boxes must have shape"):
    sj.normalize_boxes(np.zeros((2, 3)), (height, width))
  with pytest.raises(ValueError, match="image_shape"):
    sj.normalize_boxes(boxes, (0, width))


def _windows(size, out):
  """adaptive_avg_pool's windows (PyTorch's): [floor(o in / out), ceil((o + 1) in / out))."""
  return [(o * size // out, -(-(o + 1) * size // out)) for o in range(out)]


def _numpy_detail(images, task, grid, uniform_weight=0.5):
  """Variance of each task pixel's window (channels summed), pooled to the grid, as a density."""
  pixels = images.astype(np.float64) / (255.0 if images.dtype == np.uint8 else 1.0)
  b, h, w, _ = pixels.shape
  lost = np.zeros((b, task[0], task[1]))
  for i, (r0, r1) in enumerate(_windows(h, task[0])):
    for j, (c0, c1) in enumerate(_windows(w, task[1])):
      lost[:, i, j] = pixels[:, r0:r1, c0:c1].var(axis=(1, 2)).sum(-1)
  pooled = np.zeros((b,) + tuple(grid))
  for i, (r0, r1) in enumerate(_windows(task[0], grid[0])):
    for j, (c0, c1) in enumerate(_windows(task[1], grid[1])):
      pooled[:, i, j] = lost[:, r0:r1, c0:c1].mean(axis=(1, 2))
  relative = pooled / pooled.mean(axis=(1, 2), keepdims=True)
  return np.log(((1 - uniform_weight) * relative + uniform_weight) / 4)


def test_detail_matches_numpy_variances():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 30, 26, 3), dtype=np.uint8)
  images[0, :, :13] = 90  # Half of one image without detail.
  for task, grid in (((10, 13), (5, 5)), ((7, 6), (3, 4))):  # Even and overlapping windows.
    np.testing.assert_allclose(np.asarray(sj.detail_saliency(images, task, grid)),
                               _numpy_detail(images, task, grid), rtol=1e-4, atol=1e-4)
  floats = images.astype(np.float32) / 255.0
  np.testing.assert_allclose(np.asarray(sj.detail_saliency(floats, (10, 13), (5, 5),
                                                           uniform_weight=0.2)),
                             _numpy_detail(floats, (10, 13), (5, 5), 0.2), rtol=1e-4, atol=1e-4)


def test_detail_finds_fine_texture_not_smooth_edges():
  # A smooth ramp and one sharp-edged flat square carry little detail below a 4x4 block; a
  # checkerboard of 1-pixel cells carries the most.
  image = np.tile(np.linspace(0.2, 0.8, 64, dtype=np.float32)[None, :, None], (64, 1, 3))
  image[42:55, 10:23] = 0.1  # Edges across blocks: some variance in the blocks they cross.
  image[0:16, 32:48] = (np.indices((16, 16)).sum(0) % 2)[..., None]
  density = np.exp(np.asarray(sj.detail_saliency(image[None], (16, 16), (4, 4))))[0]
  assert np.unravel_index(np.argmax(density), density.shape) == (0, 2)
  assert density[0, 2] > 5 * np.median(density)


def test_detail_is_uniform_without_detail_and_has_no_gradient():
  flat = np.full((2, 32, 32, 3), 0.4, np.float32)
  np.testing.assert_allclose(np.asarray(sj.detail_saliency(flat, (8, 8), (4, 4))),
                             np.log(0.25), rtol=1e-6)
  # At the task size itself nothing is lost: every block is one pixel.
  noise = np.random.default_rng(1).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(sj.detail_saliency(noise, (8, 8), (4, 4))), np.log(0.25),
                             rtol=1e-6)
  np.testing.assert_allclose(np.asarray(sj.detail_saliency(noise, (4, 4), (4, 4),
                                                           uniform_weight=1.0)), np.log(0.25),
                             rtol=1e-6)
  noise = jnp.asarray(noise)
  np.testing.assert_allclose(np.asarray(jax.jit(sj.detail_saliency, static_argnums=(1, 2))(
      noise, (4, 4), (2, 2))), np.asarray(sj.detail_saliency(noise, (4, 4), (2, 2))), rtol=1e-6)
  grads = jax.grad(lambda x: jnp.sum(sj.detail_saliency(x, (4, 4), (2, 2)) ** 2))(noise)
  assert np.all(np.asarray(grads) == 0)


def test_detail_bad_input():
  images = np.zeros((1, 16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match="task_shape must be at most"):
    sj.detail_saliency(images, (32, 8), (4, 4))
  with pytest.raises(ValueError, match="uniform_weight"):
    sj.detail_saliency(images, (8, 8), (4, 4), uniform_weight=0.0)
  with pytest.raises(ValueError, match="uint8"):
    sj.detail_saliency(images.astype(np.int32), (8, 8), (4, 4))
  with pytest.raises(ValueError, match="images must have shape"):
    sj.detail_saliency(images[0], (8, 8), (4, 4))
  with pytest.raises(ValueError, match="grid_shape"):
    sj.detail_saliency(images, (8, 8), (0, 4))
