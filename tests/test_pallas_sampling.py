"""The Pallas grid_sample against the XLA path (itself tested against PyTorch in test_sampling).

On CPU the kernels run in Pallas' interpret mode, which executes the kernel bodies as written
(gathers at computed indices, masked stores) but not the Triton compiler; that they lower to
Triton is checked separately by exporting for CUDA, which needs no GPU.
"""

import itertools

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.ops import pallas_sampling
from saliency_jax.ops import sampling

CONVENTIONS = list(itertools.product([True, False], ["zeros", "border", "reflection"]))


def _grid(batch, height, width, align_corners, rng, rows=4):
  """`rows` rows of random points in [-1.3, 1.3], then a row of points exactly on pixel centres, on the border,
  half a pixel out and far outside (exact binary fractions for the sizes used here)."""
  def normalise(pixel, size):
    return (2 * pixel / (size - 1) - 1) if align_corners else ((2 * pixel + 1) / size - 1)
  xs = [normalise(p, width) for p in (0, 1, width - 1, -0.5, width - 0.5, 2)] + [-3.0, 3.0]
  ys = [normalise(p, height) for p in (0, height - 1, -0.5, 1, 2, height - 0.5, 0, 1)]
  special = np.stack([np.array(xs), np.array(ys)], -1)[None, None]
  special = np.broadcast_to(special, (batch, 1, len(xs), 2))
  random = rng.uniform(-1.3, 1.3, (batch, rows, len(xs), 2))
  return np.concatenate([random, special], axis=1).astype(np.float32)


def _sample_and_grads(implementation, image, grid, cotangent, **options):
  """Output, gradient to the image (floating images only) and gradient to the grid, jitted."""
  f = lambda im, g: sj.grid_sample(im, g, implementation=implementation, **options)
  loss = lambda im, g: jnp.sum(f(im, g).astype(jnp.float32) * cotangent)
  argnums = (0, 1) if jnp.issubdtype(image.dtype, jnp.floating) else (1,)
  return jax.jit(lambda im, g: (f(im, g), jax.grad(loss, argnums)(im, g)))(image, grid)


@pytest.mark.parametrize("align_corners,padding_mode", CONVENTIONS)
def test_forward_and_gradients_equal_the_xla_path(align_corners, padding_mode):
  rng = np.random.default_rng(0)
  # Rectangular, odd with align_corners (sizes whose special points are exact binary fractions
  # in each convention); the output (5 x 8 = 40 pixels) is one partly masked block of 64.
  shape = (2, 5, 9, 3) if align_corners else (2, 4, 8, 3)
  image = rng.random(shape, dtype=np.float32)
  grid = _grid(2, *image.shape[1:3], align_corners, rng)
  cotangent = rng.normal(size=grid.shape[:3] + (3,)).astype(np.float32)
  options = dict(align_corners=align_corners, padding_mode=padding_mode)
  out, (image_grad, grid_grad) = _sample_and_grads("pallas", image, grid, cotangent, **options)
  ref_out, (ref_image_grad, ref_grid_grad) = _sample_and_grads(
      "xla", image, grid, cotangent, **options)
  np.testing.assert_allclose(out, ref_out, atol=1e-6)
  np.testing.assert_allclose(image_grad, ref_image_grad, atol=1e-5)
  np.testing.assert_allclose(grid_grad, ref_grid_grad, atol=1e-4, rtol=1e-5)


# The conventions are covered in float32 above; one each for the other dtypes (uint8 with the
# authors' convention, as the trainer feeds it).
@pytest.mark.parametrize("dtype,align_corners,padding_mode", [
    (np.uint8, True, "zeros"),
    (jnp.bfloat16, False, "reflection"),
])
def test_uint8_and_bfloat16_images_equal_the_xla_path(dtype, align_corners, padding_mode):
  rng = np.random.default_rng(1)
  shape = (2, 5, 9, 4) if align_corners else (2, 4, 8, 4)
  image = rng.integers(0, 256, shape).astype(dtype)
  if dtype != np.uint8:
    image = (image / 255).astype(dtype)
  grid = _grid(2, *shape[1:3], align_corners, rng)
  cotangent = rng.normal(size=grid.shape[:3] + (4,)).astype(np.float32)
  options = dict(align_corners=align_corners, padding_mode=padding_mode)
  out, grads = _sample_and_grads("pallas", image, grid, cotangent, **options)
  ref_out, ref_grads = _sample_and_grads("xla", image, grid, cotangent, **options)
  assert out.dtype == ref_out.dtype == (jnp.float32 if dtype == np.uint8 else dtype)
  if dtype == np.uint8:
    np.testing.assert_allclose(out, ref_out, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(grads[0], ref_grads[0], rtol=1e-5, atol=1e-2)
  else:
    # Both round the same float32 sums to bfloat16: at most one bfloat16 step apart.
    np.testing.assert_allclose(out.astype(np.float32), ref_out.astype(np.float32), atol=2**-8)
    for grad, ref in zip(grads, ref_grads):
      np.testing.assert_allclose(grad.astype(np.float32), ref.astype(np.float32), rtol=2**-7,
                                 atol=2**-7)


@pytest.mark.parametrize("shape,out,block,padding_mode", [
    ((1, 9, 8, 5), (5, 7), 8, "zeros"),  # 5 programs, the last 3 of 8 pixels; channels padded.
    ((2, 1, 6, 1), (3, 5), 4, "border"),  # One-pixel-high image: a single row of taps.
    ((1, 7, 1, 2), (4, 3), None, "reflection"),  # One-pixel-wide image, the default block.
])
def test_blocks_and_degenerate_sizes_equal_the_xla_path(shape, out, block, padding_mode):
  rng = np.random.default_rng(2)
  image = jnp.asarray(rng.random(shape, dtype=np.float32))
  grid = jnp.asarray(rng.uniform(-1.4, 1.4, (shape[0],) + out + (2,)).astype(np.float32))
  cotangent = rng.normal(size=(shape[0],) + out + (shape[3],)).astype(np.float32)

  def pallas(im, g):
    return pallas_sampling.grid_sample(im, g, align_corners=False, padding_mode=padding_mode,
                                       interpret=True, block_pixels=block)

  def xla(im, g):
    return sj.grid_sample(im, g, padding_mode=padding_mode)

  def sample_and_grads(f):
    loss = lambda im, g: jnp.sum(f(im, g) * cotangent)
    return jax.jit(lambda im, g: (f(im, g), jax.grad(loss, (0, 1))(im, g)))(image, grid)

  out, (image_grad, grid_grad) = sample_and_grads(pallas)
  ref_out, (ref_image_grad, ref_grid_grad) = sample_and_grads(xla)
  np.testing.assert_allclose(out, ref_out, atol=1e-6)
  np.testing.assert_allclose(image_grad, ref_image_grad, atol=1e-5)
  np.testing.assert_allclose(grid_grad, ref_grid_grad, atol=1e-4, rtol=1e-5)


def test_jit_and_vmap_equal_the_xla_path():
  rng = np.random.default_rng(3)
  image = jnp.asarray(rng.random((3, 6, 7, 2)), jnp.float32)
  grid = jnp.asarray(rng.uniform(-1.2, 1.2, (3, 4, 3, 2)), jnp.float32)
  f = lambda im, g: sj.grid_sample(im, g, padding_mode="reflection", implementation="pallas")
  ref = sj.grid_sample(image, grid, padding_mode="reflection")
  np.testing.assert_allclose(jax.jit(f)(image, grid), ref, atol=1e-6)
  per_example = lambda im, g: f(im[None], g[None])[0]
  np.testing.assert_allclose(jax.vmap(per_example)(image, grid), ref, atol=1e-6)
  grad_vmap = jax.vmap(jax.grad(lambda g, im: jnp.sum(per_example(im, g))))(grid, image)
  grad_ref = jax.grad(lambda g: jnp.sum(sj.grid_sample(image, g, padding_mode="reflection")))(grid)
  np.testing.assert_allclose(grad_vmap, grad_ref, atol=1e-5)


def test_grid_gradient_skips_the_scatter_into_the_image():
  # In interpret mode the kernels' masked stores are scatters too, so look for the image's
  # scatter-add in the program (jaxpr) rather than in the compiled HLO.
  image = jnp.ones((1, 6, 6, 3))
  grid = jnp.zeros((1, 4, 4, 2))
  loss = lambda g, im: jnp.sum(sj.grid_sample(im, g, implementation="pallas"))
  only_grid = str(jax.make_jaxpr(jax.grad(loss))(grid, image))
  both = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(grid, image))
  assert "pallas_call" in only_grid and "scatter-add" not in only_grid
  assert "scatter-add" in both


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.float32, jnp.bfloat16])
def test_kernels_lower_to_triton(dtype):
  # Exporting for CUDA runs the Pallas -> Triton lowering (power-of-two shapes, supported
  # primitives) without a GPU; compiling the Triton IR to PTX happens only on a GPU.
  image = jax.ShapeDtypeStruct((2, 7, 9, 3), dtype)
  grid = jax.ShapeDtypeStruct((2, 5, 6, 2), jnp.float32)
  sample = lambda im, g, mode: pallas_sampling.grid_sample(
      im, g, align_corners=False, padding_mode=mode, interpret=False)
  grid_grad = lambda im, g, mode: jax.grad(lambda g: jnp.sum(sample(im, g, mode)))(g)
  for fn, mode in itertools.product([sample, grid_grad], ["zeros", "reflection"]):
    try:
      exported = export.export(
          jax.jit(fn, static_argnums=2), platforms=["cuda"],
          disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
      )(image, grid, mode)
    except ValueError as e:
      if "Cannot lower pallas_call on platform" in str(e):
        pytest.skip(f"this jaxlib cannot lower Pallas for GPU: {e}")
      raise
    assert exported.mlir_module().count("__gpu$xla.gpu.triton") == 1


def test_saliency_sample_passes_the_implementation_through():
  rng = np.random.default_rng(4)
  image = rng.integers(0, 256, (1, 12, 10, 3), dtype=np.uint8)
  logits = rng.normal(size=(1, 5, 5)).astype(np.float32)
  ref, _, _ = sj.saliency_sample(image, logits, (6, 5), padding=4)
  out, _, _ = sj.saliency_sample(image, logits, (6, 5), padding=4, implementation="pallas")
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-4)


def test_auto_is_the_measured_winner_per_backend(monkeypatch):
  # The winners measured by benchmarks/sampler.py (benchmarks/results/sampler_gpu.json).
  assert sampling.resolve_implementation("auto") == "xla"  # these tests run on the CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert sampling.resolve_implementation("auto") == "pallas"
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert sampling.resolve_implementation("auto") == "xla"
  rng = np.random.default_rng(5)
  image = rng.random((1, 5, 6, 2), dtype=np.float32)
  grid = rng.uniform(-1, 1, (1, 3, 3, 2)).astype(np.float32)
  np.testing.assert_array_equal(sj.grid_sample(image, grid, implementation="auto"),
                                sj.grid_sample(image, grid))


def test_images_beyond_the_kernels_int32_index(monkeypatch):
  # A limit of 59 values stands in for 2^31 - 1: the image below has 5 * 6 * 2 = 60.
  monkeypatch.setattr(sampling, "_PALLAS_MAX_ELEMENTS", 59)
  monkeypatch.setattr(sampling, "_AUTO_IMPLEMENTATION", {"cpu": "pallas"})
  rng = np.random.default_rng(6)
  image = rng.random((2, 5, 6, 2), dtype=np.float32)
  grid = rng.uniform(-1, 1, (2, 3, 3, 2)).astype(np.float32)
  message = r"at most 59 values per image; got image shape \(2, 5, 6, 2\)"
  with pytest.raises(ValueError, match=message):
    sj.grid_sample(image, grid, implementation="pallas")
  # "auto" falls back to the XLA path, which indexes in int64 where it must.
  np.testing.assert_array_equal(sj.grid_sample(image, grid, implementation="auto"),
                                sj.grid_sample(image, grid))


@pytest.mark.parametrize("implementation", ["triton", "XLA", None])
def test_unknown_implementation_is_a_clear_error(implementation):
  image = np.zeros((1, 5, 5, 3), np.float32)
  message = rf"implementation must be one of \('xla', 'pallas', 'auto'\); got {implementation!r}"
  with pytest.raises(ValueError, match=message):
    sj.grid_sample(image, np.zeros((1, 2, 2, 2), np.float32), implementation=implementation)
  with pytest.raises(ValueError, match=message):
    sj.saliency_sample(image, np.zeros((1, 3, 3), np.float32), (2, 2),
                       implementation=implementation)
