"""grid_sample against torch.nn.functional.grid_sample (the independent reference)."""

import itertools
import re

import jax
from jax import test_util as jtu
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import saliency_jax as sj
from saliency_jax.ops import taps

CONVENTIONS = list(itertools.product([True, False], ["zeros", "border", "reflection"]))


def _torch_sample(image, grid, align_corners, padding_mode, cotangent=None):
  """Reference output and gradients (to the image and the grid) from PyTorch, NHWC in and out."""
  image_t = torch.tensor(np.asarray(image, np.float64)).permute(0, 3, 1, 2).requires_grad_()
  grid_t = torch.tensor(np.asarray(grid, np.float64)).requires_grad_()
  out = F.grid_sample(image_t, grid_t, mode="bilinear", padding_mode=padding_mode,
                      align_corners=align_corners)
  if cotangent is None:
    return out.permute(0, 2, 3, 1).detach().numpy()
  (out * torch.tensor(np.asarray(cotangent, np.float64)).permute(0, 3, 1, 2)).sum().backward()
  return (out.permute(0, 2, 3, 1).detach().numpy(),
          image_t.grad.permute(0, 2, 3, 1).numpy(), grid_t.grad.numpy())


def _special_grid(height, width, align_corners):
  """Points exactly on pixel centres, on the border, half a pixel out, and far outside."""
  def normalise(pixel, size):
    return (2 * pixel / (size - 1) - 1) if align_corners else ((2 * pixel + 1) / size - 1)
  xs = [normalise(p, width) for p in (0, 1, width - 2, width - 1, -0.5, width - 0.5, 2.25)]
  ys = [normalise(p, height) for p in (0, 1, height - 1, -0.5, height - 0.5, 1.5)]
  xs += [-1.0, 1.0, -3.0, 3.0]
  ys += [-1.0, 1.0]
  gx, gy = np.meshgrid(np.array(xs), np.array(ys))
  return np.stack([gx, gy], -1)[None].astype(np.float32)


@pytest.mark.parametrize("align_corners,padding_mode", CONVENTIONS)
@pytest.mark.parametrize("shape", [(2, 9, 11, 3), (1, 7, 5, 1), (1, 2, 13, 4)])
def test_forward_and_gradients_match_torch(shape, align_corners, padding_mode):
  rng = np.random.default_rng(sum(shape))
  image = rng.random(shape, dtype=np.float32)
  grid = rng.uniform(-1.3, 1.3, (shape[0], 6, 5, 2)).astype(np.float32)
  cotangent = rng.normal(size=(shape[0], 6, 5, shape[3])).astype(np.float32)
  ref_out, ref_image_grad, ref_grid_grad = _torch_sample(
      image, grid, align_corners, padding_mode, cotangent)

  def loss(im, g):
    out = sj.grid_sample(im, g, align_corners=align_corners, padding_mode=padding_mode)
    return jnp.sum(out * cotangent)

  out = sj.grid_sample(image, grid, align_corners=align_corners, padding_mode=padding_mode)
  image_grad, grid_grad = jax.grad(loss, argnums=(0, 1))(image, grid)
  np.testing.assert_allclose(out, ref_out, atol=2e-6)
  np.testing.assert_allclose(image_grad, ref_image_grad, atol=2e-5)
  np.testing.assert_allclose(grid_grad, ref_grid_grad, atol=2e-4, rtol=1e-5)
  # The grid gradient alone (the image not differentiated) is the same numbers, to the float32
  # rounding of two programs compiled apart (the tests compile at -O0, which contracts
  # multiply-adds differently).
  np.testing.assert_allclose(jax.grad(loss, argnums=1)(image, grid), grid_grad, rtol=2e-6,
                             atol=1e-6)


@pytest.mark.parametrize("align_corners,padding_mode", CONVENTIONS)
def test_exact_pixel_centres_and_border_points_match_torch(align_corners, padding_mode):
  rng = np.random.default_rng(1)
  # Sizes for which these points are exact binary fractions in either convention, so that both
  # implementations land on exactly the same side of every pixel boundary.
  height, width = (5, 9) if align_corners else (4, 8)
  image = rng.random((1, height, width, 2), dtype=np.float32)
  grid = _special_grid(height, width, align_corners)
  cotangent = rng.normal(size=grid.shape[:3] + (2,)).astype(np.float32)
  ref_out, ref_image_grad, ref_grid_grad = _torch_sample(
      image, grid, align_corners, padding_mode, cotangent)
  loss = lambda im, g: jnp.sum(sj.grid_sample(
      im, g, align_corners=align_corners, padding_mode=padding_mode) * cotangent)
  out = sj.grid_sample(image, grid, align_corners=align_corners, padding_mode=padding_mode)
  image_grad, grid_grad = jax.grad(loss, argnums=(0, 1))(image, grid)
  np.testing.assert_allclose(out, ref_out, atol=2e-6)
  np.testing.assert_allclose(image_grad, ref_image_grad, atol=2e-5)
  np.testing.assert_allclose(grid_grad, ref_grid_grad, atol=2e-4)


def test_pixel_centres_reproduce_the_image_exactly():
  image = np.arange(5 * 7 * 3, dtype=np.float32).reshape(1, 5, 7, 3)
  gx, gy = np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 5))
  grid = np.stack([gx, gy], -1)[None].astype(np.float32)
  np.testing.assert_allclose(sj.grid_sample(image, grid, align_corners=True), image, atol=1e-4)


def test_uint8_is_read_as_values_and_matches_float():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (2, 10, 12, 3), dtype=np.uint8)
  grid = rng.uniform(-1.1, 1.1, (2, 4, 5, 2)).astype(np.float32)
  out = sj.grid_sample(image, grid, align_corners=True)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, _torch_sample(image, grid, True, "zeros"), rtol=1e-5)
  # Differentiable with respect to the grid; the integer image has no gradient.
  grad = jax.grad(lambda g: jnp.sum(sj.grid_sample(image, g)))(grid)
  ref = jax.grad(lambda g: jnp.sum(sj.grid_sample(image.astype(np.float32), g)))(grid)
  np.testing.assert_allclose(grad, ref, rtol=1e-6)


def test_uint8_path_never_converts_the_whole_image():
  # The compiled program must hold no float32 array of the high-resolution image's size.
  image = jnp.zeros((2, 64, 64, 3), jnp.uint8)
  grid = jnp.zeros((2, 8, 8, 2))
  hlo = jax.jit(lambda im, g: sj.grid_sample(im, g)).lower(image, grid).as_text()
  assert "64x64x3xf32" not in hlo and "12288x3xf32" not in hlo
  grad = jax.jit(jax.grad(lambda g, im: jnp.sum(sj.grid_sample(im, g))))
  assert "64x64x3xf32" not in grad.lower(grid, image).as_text()


def test_bfloat16_image():
  rng = np.random.default_rng(3)
  image = rng.random((1, 9, 9, 3), dtype=np.float32)
  grid = rng.uniform(-1, 1, (1, 5, 5, 2)).astype(np.float32)
  out = sj.grid_sample(image.astype(jnp.bfloat16), grid)
  assert out.dtype == jnp.bfloat16
  ref = _torch_sample(image.astype(jnp.bfloat16).astype(np.float32), grid, False, "zeros")
  np.testing.assert_allclose(out.astype(np.float32), ref, atol=1e-2)


def test_grid_gradient_skips_the_scatter_into_the_image():
  image = jnp.ones((2, 32, 32, 3))
  grid = jnp.zeros((2, 8, 8, 2))
  # In the program JAX hands to XLA: XLA's CPU backends may rewrite a scatter into a loop. On
  # the CPU the scatter-add is `ops.native`'s kernel when it is built (a custom call).
  has_scatter = lambda f: re.search(r"\bscatter\b|saliency_jax_scatter",
                                    f.lower(grid, image).as_text())
  only_grid = jax.jit(jax.grad(lambda g, im: jnp.sum(sj.grid_sample(im, g))))
  assert not has_scatter(only_grid)
  both = jax.jit(jax.grad(lambda g, im: jnp.sum(sj.grid_sample(im, g)), argnums=(0, 1)))
  assert has_scatter(both)


def test_check_grads():
  rng = np.random.default_rng(4)
  image = jnp.asarray(rng.random((1, 6, 7, 2)), jnp.float32)
  # Keep points away from integer pixel positions, where bilinear sampling has kinks.
  grid = jnp.asarray(rng.uniform(-0.8, 0.8, (1, 3, 4, 2)), jnp.float32)
  f = lambda im, g: sj.grid_sample(im, g, align_corners=False, padding_mode="border")
  jtu.check_grads(f, (image, grid), order=1, modes=["rev"], eps=1e-3, atol=5e-2,
                            rtol=5e-2)


def test_jit_equals_eager_and_vmap_equals_loop():
  rng = np.random.default_rng(5)
  image = jnp.asarray(rng.random((3, 8, 9, 2)), jnp.float32)
  grid = jnp.asarray(rng.uniform(-1.2, 1.2, (3, 4, 4, 2)), jnp.float32)
  f = lambda im, g: sj.grid_sample(im, g, padding_mode="reflection")
  np.testing.assert_allclose(jax.jit(f)(image, grid), f(image, grid), atol=1e-6)
  per_example = lambda im, g: f(im[None], g[None])[0]
  looped = jnp.stack([per_example(image[i], grid[i]) for i in range(3)])
  np.testing.assert_allclose(jax.vmap(per_example)(image, grid), looped, atol=1e-6)
  grad_vmap = jax.vmap(jax.grad(lambda g, im: jnp.sum(per_example(im, g))))(grid, image)
  grad_full = jax.grad(lambda g: jnp.sum(f(image, g)))(grid)
  np.testing.assert_allclose(grad_vmap, grad_full, atol=1e-5)


def test_nan_grid_propagates_under_jit():
  image = jnp.ones((1, 5, 5, 1))
  grid = jnp.zeros((1, 2, 2, 2)).at[0, 0, 0, 0].set(jnp.nan)
  out = jax.jit(sj.grid_sample)(image, grid)
  assert np.isnan(out[0, 0, 0, 0]) and np.all(np.isfinite(out[0, 1]))


@pytest.mark.parametrize("image,grid,kwargs,message", [
    (np.zeros((5, 5, 3)), np.zeros((1, 2, 2, 2)), {}, "image must have shape"),
    (np.zeros((1, 0, 5, 3)), np.zeros((1, 2, 2, 2)), {}, "non-empty"),
    (np.zeros((1, 5, 5, 3)), np.zeros((1, 2, 2, 3)), {}, "grid must have shape"),
    (np.zeros((1, 5, 5, 3)), np.zeros((1, 2, 2, 2), np.int32), {}, "grid must be floating"),
    (np.zeros((2, 5, 5, 3)), np.zeros((1, 2, 2, 2)), {}, "same batch size"),
    (np.zeros((1, 5, 5, 3), np.int32), np.zeros((1, 2, 2, 2)), {}, "floating or uint8"),
    (np.zeros((1, 5, 5, 3)), np.full((1, 2, 2, 2), np.nan), {}, "grid must be finite"),
    (np.zeros((1, 5, 5, 3)), np.zeros((1, 2, 2, 2)), {"padding_mode": "wrap"}, "padding_mode"),
    (np.zeros((1, 5, 5, 3)), np.zeros((1, 2, 2, 2)), {"align_corners": "no"}, "align_corners"),
    (np.zeros((1, 5, 5, 3)), np.zeros((1, 2, 2, 2)), {"align_corners": 1}, "align_corners"),
])
def test_bad_input_is_a_clear_error(image, grid, kwargs, message):
  with pytest.raises(ValueError, match=message):
    sj.grid_sample(image, grid, **kwargs)


def test_images_beyond_the_int32_flat_index_read_the_right_pixel(monkeypatch):
  # The flat pixel index of a [B * H * W, C] gather overflows int32 beyond 2^31 pixels (e.g.
  # [3, 27000, 27000, 1]); such images are read by a (row, column) gather per image instead. A
  # lowered threshold sends this small batch down that path; the expected values are torch's.
  monkeypatch.setattr(taps, "_INT32_MAX", 2 * 9 * 11 - 1)
  rng = np.random.default_rng(11)
  image = rng.random((3, 9, 11, 2), dtype=np.float32)
  grid = rng.uniform(-1.1, 1.1, (3, 4, 5, 2)).astype(np.float32)
  cotangent = rng.normal(size=(3, 4, 5, 2)).astype(np.float32)
  out, vjp = jax.vjp(lambda im, gr: sj.grid_sample(im, gr, align_corners=True), image, grid)
  want, want_image, want_grid = _torch_sample(image, grid, True, "zeros", cotangent)
  got_image, got_grid = vjp(cotangent)
  np.testing.assert_allclose(out, want, atol=1e-5)
  np.testing.assert_allclose(got_image, want_image, atol=1e-5)
  np.testing.assert_allclose(got_grid, want_grid, atol=1e-4)
  # uint8 through the same path: the last image's bottom-right pixel, as in the overflow report.
  pixels = np.zeros((3, 9, 11, 1), np.uint8)
  pixels[:, -1, -1, 0] = [100, 150, 200]
  corner = sj.grid_sample(pixels, np.ones((3, 1, 1, 2), np.float32), align_corners=True)
  np.testing.assert_array_equal(np.ravel(corner), [100.0, 150.0, 200.0])


def test_batched_and_flat_tap_gathers_agree():
  rng = np.random.default_rng(12)
  image = jnp.asarray(rng.integers(0, 256, (2, 6, 7, 3), dtype=np.uint8))
  row = jnp.asarray(rng.integers(0, 5, (2, 3, 4)), jnp.int32)
  col = jnp.asarray(rng.integers(0, 6, (2, 3, 4)), jnp.int32)
  flat = taps.gather_taps(image, row, col, 2, 2)
  batched = taps._gather_taps_batched(image, row, col, 2, 2)
  for r in range(2):
    for c in range(2):
      # Independent reference: NumPy fancy indexing of each tap.
      want = np.asarray(image)[np.arange(2)[:, None, None], row + r, col + c]
      np.testing.assert_array_equal(flat[r][c], want)
      np.testing.assert_array_equal(batched[r][c], want)
