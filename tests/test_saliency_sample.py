"""saliency_sample: the whole layer against the PyTorch port of the authors' code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import saliency_jax as sj
from tests.references import torch_sampler


@pytest.mark.parametrize("grid_shape,out_shape,padding", [
    ((31, 31), (56, 56), 30),
    ((20, 27), (40, 48), 12),
])
def test_forward_and_logit_gradient_match_the_pytorch_port(grid_shape, out_shape, padding):
  rng = np.random.default_rng(0)
  image = rng.random((2, 70, 90, 3), dtype=np.float32)
  logits = rng.normal(0, 2, (2,) + grid_shape).astype(np.float32)
  cotangent = rng.normal(size=(2,) + out_shape + (3,)).astype(np.float32)

  image_t = torch.tensor(image, dtype=torch.float64).permute(0, 3, 1, 2)
  logits_t = torch.tensor(logits, dtype=torch.float64)[:, None].requires_grad_()
  ref_sampled, ref_grid, ref_saliency = torch_sampler.reference_saliency_sample(
      image_t, logits_t, out_shape, padding=padding)
  (ref_sampled * torch.tensor(cotangent, dtype=torch.float64).permute(0, 3, 1, 2)).sum().backward()

  def loss(lg):
    sampled, _, _ = sj.saliency_sample(image, lg, out_shape, padding=padding)
    return jnp.sum(sampled * cotangent)

  sampled, grid, saliency = sj.saliency_sample(image, logits, out_shape, padding=padding)
  np.testing.assert_allclose(saliency, ref_saliency[:, 0].detach().numpy(), rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(grid, ref_grid.detach().numpy(), atol=2e-6)
  np.testing.assert_allclose(sampled, ref_sampled.permute(0, 2, 3, 1).detach().numpy(), atol=2e-5)
  grad = jax.grad(loss)(logits)
  ref_grad = logits_t.grad[:, 0].numpy()
  np.testing.assert_allclose(grad, ref_grad, atol=2e-3 * np.abs(ref_grad).max())


def test_tuned_pytorch_variant_computes_the_same_layer():
  # The benchmark's faster PyTorch baseline must be the same function as the reference.
  rng = np.random.default_rng(1)
  image = torch.tensor(rng.random((2, 3, 64, 64)), dtype=torch.float64)
  logits = torch.tensor(rng.normal(size=(2, 1, 31, 31)), dtype=torch.float64)
  tuned = torch_sampler.TunedSampler((31, 31), (32, 32), dtype=torch.float64)
  for a, b in zip(tuned(image, logits), torch_sampler.reference_saliency_sample(
      image, logits, (32, 32))):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-12)


def test_defaults_are_the_authors():
  # fwhm 13, padding 30, edge padding, align_corners=True sampling with zeros outside.
  rng = np.random.default_rng(2)
  image = rng.random((1, 40, 40, 3), dtype=np.float32)
  logits = rng.normal(size=(1, 31, 31)).astype(np.float32)
  sampled, grid, saliency = sj.saliency_sample(image, logits, (24, 24))
  explicit_grid = sj.attraction_grid(saliency, (24, 24), fwhm=13.0, padding=30, pad_mode="edge")
  np.testing.assert_array_equal(grid, explicit_grid)
  np.testing.assert_array_equal(
      sampled, sj.grid_sample(image, grid, align_corners=True, padding_mode="zeros"))


def test_temperature_divides_the_logits():
  rng = np.random.default_rng(3)
  image = rng.random((1, 20, 20, 1), dtype=np.float32)
  logits = rng.normal(size=(1, 8, 8)).astype(np.float32)
  hot = sj.saliency_sample(image, logits, (10, 10), temperature=0.25, padding=7)
  cold = sj.saliency_sample(image, logits * 4, (10, 10), padding=7)
  for a, b in zip(hot, cold):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # A lower temperature zooms harder: the map is sharper.
  assert hot[2].max() > sj.softmax_saliency(logits).max()


def test_uniform_logits_sample_the_uniformly_downsampled_image():
  # A uniform map gives the identity grid, so the layer is plain bilinear resampling.
  image = np.random.default_rng(4).random((1, 31, 31, 2), dtype=np.float32)
  sampled, _, _ = sj.saliency_sample(image, np.zeros((1, 31, 31), np.float32), (31, 31))
  np.testing.assert_allclose(sampled, image, atol=2e-5)


@pytest.mark.parametrize("factor,antialias,atol", [(2, False, 0.06), (2, True, 0.01),
                                                    (4, True, 0.01)])
def test_exact_identity_at_a_uniform_map_is_area_downsampling(factor, antialias, atol):
  """`exact_identity` with align_corners=False: a uniform map reads each output pixel at the
  centre of its block of source pixels (`grid_sample`'s convention), so bilinear sampling at 2x
  and the anti-aliased footprint (a block of the area pyramid) at 2x and 4x give the block
  means, `area_resize`'s, to float32 rounding (a pyramid of uint8 levels, rounded to grey
  levels, was up to 1 of 255 off, and lost detail uniform downsampling keeps: README, the
  zoom-task suite); the authors' grid clamps the border and drifts across the pixels."""
  image = np.random.default_rng(4).integers(0, 256, (2, 96, 128, 3)).astype(np.uint8)
  out_shape = (96 // factor, 128 // factor)
  area = np.asarray(sj.area_resize(image, out_shape))
  zero = np.zeros((2, 31, 31), np.float32)
  exact, _, _ = sj.saliency_sample(image, zero, out_shape, align_corners=False,
                                   exact_identity=True, antialias=antialias)
  np.testing.assert_allclose(exact, area, atol=atol)
  authors, _, _ = sj.saliency_sample(image, zero, out_shape, antialias=antialias)
  assert np.abs(np.asarray(authors) - area).mean() > 10
  with pytest.raises(ValueError, match="exact_identity must be True or False; got 'yes'"):
    sj.saliency_sample(image, zero, out_shape, exact_identity="yes")


@pytest.mark.parametrize("logits", [
    np.full((1, 31, 31), 1e30, np.float32),                               # huge and equal
    np.where(np.arange(961).reshape(1, 31, 31) == 400, 1e4, 0).astype(np.float32),  # one-hot
    np.where(np.arange(961).reshape(1, 31, 31) == 0, 88.0, -88.0).astype(np.float32),
])
def test_extreme_logits_give_finite_outputs_and_gradients(logits):
  image = np.random.default_rng(5).random((1, 50, 50, 3), dtype=np.float32)
  loss = lambda lg: jnp.sum(sj.saliency_sample(image, lg, (32, 32))[0])
  outputs = sj.saliency_sample(image, logits, (32, 32))
  assert all(np.all(np.isfinite(o)) for o in outputs)
  assert np.all(np.isfinite(jax.grad(loss)(logits)))


def test_uint8_image_through_the_layer():
  rng = np.random.default_rng(6)
  image = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  logits = rng.normal(size=(2, 31, 31)).astype(np.float32)
  a, _, _ = sj.saliency_sample(image, logits, (32, 32))
  b, _, _ = sj.saliency_sample(image.astype(np.float32), logits, (32, 32))
  assert a.dtype == jnp.float32
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_jit_equals_eager_vmap_equals_loop_and_no_recompilation():
  rng = np.random.default_rng(7)
  image = jnp.asarray(rng.random((3, 40, 40, 3)), jnp.float32)
  logits = jnp.asarray(rng.normal(size=(3, 31, 31)), jnp.float32)
  layer = lambda im, lg: sj.saliency_sample(im, lg, (24, 24))[0]
  jitted = jax.jit(layer)
  np.testing.assert_allclose(jitted(image, logits), layer(image, logits), atol=1e-5)
  one = lambda im, lg: layer(im[None], lg[None])[0]
  # Batched and unbatched programs round the grid's matrix products differently (a few float32
  # ulps), which moves a sample by the image's slope times that: ~1e-5 on values in [0, 1]
  # (1.05e-5 measured on one machine). A wrong batch axis would be off by O(0.1).
  np.testing.assert_allclose(jax.vmap(one)(image, logits),
                             np.stack([one(image[i], logits[i]) for i in range(3)]), atol=5e-5)
  # New values of the same shapes reuse the compiled program, jitted or eager.
  jitted(image + 1, logits * 2)
  assert jitted._cache_size() == 1
  from saliency_jax.ops import attraction, sampling
  before = (attraction._attraction_grid._cache_size(), sampling._grid_sample._cache_size())
  layer(image * 0.5, logits + 1)
  after = (attraction._attraction_grid._cache_size(), sampling._grid_sample._cache_size())
  assert before == after


def test_gradient_reaches_the_logits_but_not_through_the_image():
  rng = np.random.default_rng(8)
  image = jnp.asarray(rng.random((1, 40, 40, 3)), jnp.float32)
  logits = jnp.asarray(rng.normal(size=(1, 31, 31)), jnp.float32)
  grad = jax.grad(lambda lg: jnp.sum(sj.saliency_sample(image, lg, (24, 24))[0] ** 2))(logits)
  assert np.abs(grad).max() > 0
  # Gradients sum to zero over each map: the softmax is invariant to adding a constant.
  np.testing.assert_allclose(grad.sum(), 0.0, atol=1e-4 * np.abs(grad).sum())


@pytest.mark.parametrize("image,logits,kwargs,message", [
    (np.zeros((2, 8, 8, 3)), np.zeros((3, 4, 4)), {}, "same batch size"),
    (np.zeros((1, 8, 8, 3)), np.zeros((4, 4)), {}, "saliency_logits must have shape"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)), {"temperature": 0.0}, "temperature"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)), {"temperature": "1"}, "temperature must be"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)), {"temperature": None}, "temperature must be"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)), {"temperature": np.ones(2)}, "scalar"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)), {"temperature": np.inf}, "temperature must"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)), {"align_corners": "no"}, "align_corners"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)).astype(np.complex64), {}, "real array"),
    (np.zeros((1, 8, 8, 3)), np.zeros((1, 4, 4)), {"method": "conv"}, "method"),
])
def test_bad_input_is_a_clear_error(image, logits, kwargs, message):
  with pytest.raises(ValueError, match=message):
    sj.saliency_sample(image, logits, (4, 4), padding=3, **kwargs)


def test_temperature_may_be_traced_under_jit():
  # A schedule of the temperature passes it as a traced value; same numbers as a Python float.
  rng = np.random.default_rng(7)
  image = rng.random((2, 20, 20, 1), dtype=np.float32)
  logits = rng.normal(size=(2, 8, 8)).astype(np.float32)
  f = jax.jit(lambda t: sj.saliency_sample(image, logits, (10, 10), temperature=t, padding=7))
  for got, want in zip(f(jnp.float32(0.5)),
                       sj.saliency_sample(image, logits, (10, 10), temperature=0.5, padding=7)):
    np.testing.assert_allclose(got, want, atol=1e-6)
  # Under jit a non-positive temperature cannot be refused: the documented result is NaN.
  assert np.all(np.isnan(jax.jit(lambda t: sj.softmax_saliency(logits, temperature=t))(0.0)))


def test_tiny_temperature_gives_the_one_hot_map():
  # The limit of softmax(logits / t) as t -> 0: all the weight on the largest logit.
  logits = np.random.default_rng(8).normal(size=(2, 5, 6)).astype(np.float32)
  for temperature in (1e-45, 1e-30, 1e-8):
    saliency = np.asarray(sj.softmax_saliency(logits, temperature=temperature))
    want = (logits == logits.max(axis=(1, 2), keepdims=True)).astype(np.float32)
    np.testing.assert_array_equal(saliency, want)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_are_reported_at_their_cell(bad):
  logits = np.zeros((2, 4, 5), np.float32)
  logits[1, 2, 3] = bad
  with pytest.raises(ValueError, match=r"saliency_logits must be finite; found .* at index "
                                       r"\(1, 2, 3\)"):
    sj.saliency_sample(np.zeros((2, 8, 8, 3)), logits, (4, 4), padding=3)


def test_saliency_information_is_the_kl_divergence_from_the_uniform_map():
  """Against sum p log(p / q), q uniform, in float64 NumPy; 0 at the uniform map, log(cells) at a one-hot one;
  jit == eager; a finite gradient with empty cells; rank checked."""
  rng = np.random.default_rng(0)
  maps = rng.random((3, 5, 7)) ** 4
  maps[1, 2:, :] = 0.0  # Empty cells: 0 log 0 = 0.
  maps /= maps.sum(axis=(1, 2), keepdims=True)
  flat = maps.reshape(3, 35)
  expected = [np.sum(p[p > 0] * np.log(p[p > 0] * 35)) for p in flat]
  np.testing.assert_allclose(sj.saliency_information(maps), expected, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(sj.saliency_information)(maps), expected, rtol=1e-5)
  np.testing.assert_allclose(sj.saliency_information(np.full((1, 5, 7), 1 / 35)), 0.0,
                             atol=1e-6)
  np.testing.assert_allclose(sj.saliency_information(np.eye(1, 35).reshape(1, 5, 7)),
                             np.log(35), rtol=1e-6)
  grad = jax.grad(lambda m: jnp.sum(sj.saliency_information(
      sj.softmax_saliency(m))))(jnp.asarray(rng.normal(size=(2, 5, 7)) * 30))
  assert np.isfinite(grad).all()
  with pytest.raises(ValueError, match=r"saliency must have shape \[batch"):
    sj.saliency_information(np.ones((5, 7)) / 35)


def test_saliency_divergence_is_the_kl_divergence_of_the_map_from_the_target():
  """Against scipy.stats.entropy(p, q) (float64); 0 at the map equal to the target; an empty
  target cell costs nothing; gradient -target / map in the map and none in the target; jit ==
  eager; shapes checked."""
  from scipy import stats
  rng = np.random.default_rng(1)
  target = rng.random((3, 5, 7)) ** 3
  target[2, :2] = 0.0
  target /= target.sum(axis=(1, 2), keepdims=True)
  maps = rng.random((3, 5, 7)) + 0.05
  maps /= maps.sum(axis=(1, 2), keepdims=True)
  expected = [stats.entropy(p.ravel(), q.ravel()) for p, q in zip(target, maps)]
  np.testing.assert_allclose(sj.saliency_divergence(target, maps), expected, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(sj.saliency_divergence)(target, maps), expected,
                             rtol=1e-5)
  np.testing.assert_allclose(sj.saliency_divergence(maps, maps), 0.0, atol=1e-6)
  target_grad, map_grad = jax.grad(lambda t, m: jnp.sum(sj.saliency_divergence(t, m)),
                                   argnums=(0, 1))(jnp.asarray(target, jnp.float32),
                                                   jnp.asarray(maps, jnp.float32))
  np.testing.assert_array_equal(target_grad, 0.0)
  np.testing.assert_allclose(map_grad, -target / maps, rtol=1e-5)
  with pytest.raises(ValueError, match=r"got shapes \(5, 7\) and \(3, 5, 7\)"):
    sj.saliency_divergence(target[0], maps)
  with pytest.raises(ValueError, match=r"got shapes \(3, 5, 6\) and \(3, 5, 7\)"):
    sj.saliency_divergence(target[..., :6], maps)
