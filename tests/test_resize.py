"""bilinear_resize and area_resize against torch.nn.functional (the authors' resizes)."""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import saliency_jax as sj


def _nchw(x):
  return torch.tensor(np.asarray(x, np.float64)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("in_shape,out_shape", [
    ((31, 31), (224, 224)), ((14, 14), (31, 31)), ((9, 13), (5, 20)), ((7, 7), (7, 7)),
    ((1, 5), (3, 4)),
])
def test_bilinear_resize_matches_torch(in_shape, out_shape):
  x = np.random.default_rng(0).random((2,) + in_shape + (3,), dtype=np.float32)
  ref = F.interpolate(_nchw(x), size=out_shape, mode="bilinear", align_corners=False)
  out = sj.bilinear_resize(x, out_shape)
  assert out.shape == (2,) + out_shape + (3,)
  np.testing.assert_allclose(out, ref.permute(0, 2, 3, 1).numpy(), atol=2e-6)


@pytest.mark.parametrize("in_shape,out_shape", [
    ((31, 31), (224, 224)), ((9, 13), (5, 20)), ((1, 5), (3, 4)), ((7, 7), (7, 7)),
])
def test_interpolate_planes_matches_torch_with_gradients_in_both_modes(in_shape, out_shape):
  from saliency_jax.ops import resize
  rng = np.random.default_rng(2)
  x = rng.random((3,) + in_shape, dtype=np.float32)
  cotangent = rng.normal(size=(3,) + out_shape).astype(np.float32)
  tangent = rng.normal(size=x.shape).astype(np.float32)
  ref_x = torch.tensor(x, dtype=torch.float64, requires_grad=True)
  ref = F.interpolate(ref_x[:, None], size=out_shape, mode="bilinear", align_corners=False)[:, 0]
  ref.backward(torch.tensor(cotangent, dtype=torch.float64))
  # Forward mode against torch's (linear) map applied to the tangent.
  ref_tangent = F.interpolate(torch.tensor(tangent, dtype=torch.float64)[:, None],
                              size=out_shape, mode="bilinear", align_corners=False)[:, 0]

  fn = jax.jit(lambda p: resize.interpolate_planes(p, out_shape))
  out, vjp = jax.vjp(fn, x)
  _, jvp_out = jax.jvp(fn, (x,), (tangent,))
  np.testing.assert_allclose(out, ref.detach().numpy(), atol=1e-6)
  np.testing.assert_allclose(vjp(cotangent)[0], ref_x.grad.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(jvp_out, ref_tangent.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("in_shape,out_shape", [
    ((800, 800), (224, 224)), ((100, 70), (31, 9)), ((12, 12), (4, 4)), ((5, 7), (5, 7)),
])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_area_resize_matches_adaptive_avg_pool(in_shape, out_shape, dtype):
  x = np.random.default_rng(1).integers(0, 256, (1,) + in_shape + (3,)).astype(dtype)
  ref = F.adaptive_avg_pool2d(_nchw(x), out_shape).permute(0, 2, 3, 1).numpy()
  out = sj.area_resize(x, out_shape)
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-4)


def test_resizes_are_differentiable_and_jittable():
  x = np.random.default_rng(2).random((1, 6, 6, 1), dtype=np.float32)
  g = jax.grad(lambda v: jax.jit(lambda u: sj.bilinear_resize(u, (12, 12)))(v).sum())(x)
  # Each input pixel's weights in the upsampling sum to the number of outputs it feeds.
  np.testing.assert_allclose(g.sum(), 144.0, rtol=1e-5)
  g = jax.grad(lambda v: sj.area_resize(v, (3, 3)).sum())(x)
  np.testing.assert_allclose(g, np.full_like(x, 9 / 36), rtol=1e-5)


@pytest.mark.parametrize("fn", [sj.bilinear_resize, sj.area_resize])
def test_bad_input_is_a_clear_error(fn):
  with pytest.raises(ValueError, match="image must have shape"):
    fn(np.zeros((4, 4, 3)), (2, 2))
  with pytest.raises(ValueError, match="out_shape"):
    fn(np.zeros((1, 4, 4, 3)), (2,))


@pytest.mark.parametrize("dtype,value,in_shape,out_shape", [
    (np.uint16, 65535, (4000, 4000), (16, 16)),   # 250 x 250 windows: 4.1e9 > 2^31 in int32.
    (np.int32, 2**30, (64, 64), (16, 16)),         # Two values of 2^30 already overflow.
    (np.int32, -2**31, (64, 63), (17, 16)),        # Overlapping windows, running sums.
    (np.uint8, 255, (3000, 3000), (7, 7)),         # Overlapping: running sums of 9e6 pixels.
])
def test_area_resize_of_large_integers_does_not_overflow(dtype, value, in_shape, out_shape):
  # A constant image pools to the same constant (exact within float32's rounding of it).
  out = sj.area_resize(np.full((1,) + in_shape + (1,), value, dtype), out_shape)
  np.testing.assert_allclose(out, np.float32(value), rtol=1e-6)


def test_area_resize_of_uint8_stays_exact_in_integers():
  # 255 * 800 * 800 fits int32, so the running sums stay exact: the result equals the float64
  # pooling to float32 rounding of the final division only.
  x = np.random.default_rng(5).integers(0, 256, (1, 800, 800, 1), dtype=np.uint8)
  ref = F.adaptive_avg_pool2d(_nchw(x.astype(np.float64)), (224, 224)).permute(0, 2, 3, 1)
  np.testing.assert_allclose(sj.area_resize(x, (224, 224)), ref.numpy(), rtol=1e-6)
