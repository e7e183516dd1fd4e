"""The ops under every JAX parallel API, on 8 CPU devices, against the unsharded result.

`jax.pmap` (still common in existing codebases), `shard_map` over a batch-sharded mesh, and
`jax.jit` with sharded inputs: the batch split over the devices, and the high-resolution image
split over its rows. The sampler reads data-dependent pixels, so with the image split over rows
XLA gathers the image to every device first (an all-gather of the image; the output keeps the
batch layout asked for): correct, but as much traffic as replicating it. Splitting the batch
needs no communication at all.
"""
import functools

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj

try:
  from jax import shard_map  # jax >= 0.7
except ImportError:  # Older releases.
  from jax.experimental.shard_map import shard_map

DEVICES = 8
GRID = 9
OUT = (12, 12)


def _inputs(batch=DEVICES):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (batch, 40, 40, 3), dtype=np.uint8)
  logits = rng.normal(0, 2, (batch, GRID, GRID)).astype(np.float32)
  return image, logits


def _layer(image, logits):
  sampled, grid, _ = sj.saliency_sample(image, logits, OUT, padding=4, fwhm=4.0)
  return sampled, grid


def _loss(logits, image):
  return jnp.sum(_layer(image, logits)[0] ** 2)


@pytest.fixture(scope="module")
def expected():
  image, logits = _inputs()
  sampled, grid = jax.jit(_layer)(image, logits)
  return np.asarray(sampled), np.asarray(grid), np.asarray(jax.jit(jax.grad(_loss))(logits, image))


# Both kinds of mesh axes: explicit (`jax.make_mesh`'s default: shardings are part of the arrays'
# types, and the ops must not merge a sharded axis) and automatic (`jax.sharding.Mesh`'s).
AXIS_TYPES = [t for t in ("Explicit", "Auto") if hasattr(getattr(jax.sharding, "AxisType", None),
                                                         t)] or ["Auto"]


@pytest.fixture(scope="module", params=AXIS_TYPES)
def mesh(request):
  assert jax.device_count() >= DEVICES
  devices = np.asarray(jax.devices()[:DEVICES])
  if not hasattr(jax.sharding, "AxisType"):
    return jax.sharding.Mesh(devices, ("batch",))
  return jax.sharding.Mesh(devices, ("batch",),
                           axis_types=(getattr(jax.sharding.AxisType, request.param),))


def _check(got, expected):
  # Float32 rounding of the grid differs with the program's fusion: ~1e-6 of the image's width
  # in pixels, times pixel values up to 255, in the sampled values and the gradient.
  for a, b in zip(got, expected):
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=2e-5 * np.abs(b).max())


def test_pmap(expected):
  image, logits = _inputs()
  per_device = lambda im, lg: _layer(im[None], lg[None])
  sampled, grid = jax.pmap(per_device, devices=jax.devices()[:DEVICES])(image, logits)
  grad = jax.pmap(lambda lg, im: jax.grad(_loss)(lg[None], im[None]),
                  devices=jax.devices()[:DEVICES])(logits, image)
  _check((sampled[:, 0], grid[:, 0], grad[:, 0]), expected)


def test_shard_map_over_the_batch(expected, mesh):
  spec = P("batch")
  image, logits = jax.device_put(_inputs(), NamedSharding(mesh, spec))
  layer = shard_map(_layer, mesh=mesh, in_specs=(spec, spec), out_specs=(spec, spec))
  grad = shard_map(jax.grad(_loss), mesh=mesh, in_specs=(spec, spec), out_specs=spec)
  sampled, grid = jax.jit(layer)(image, logits)
  _check((sampled, grid, jax.jit(grad)(logits, image)), expected)


def test_jit_with_the_batch_sharded(expected, mesh):
  image, logits = _inputs()
  batch = NamedSharding(mesh, P("batch"))
  image, logits = jax.device_put(image, batch), jax.device_put(logits, batch)
  sampled, grid = jax.jit(_layer, out_shardings=(batch, batch))(image, logits)
  grad = jax.jit(jax.grad(_loss), out_shardings=batch)(logits, image)
  assert sampled.sharding.spec == P("batch") and grad.sharding.spec == P("batch")
  _check((sampled, grid, grad), expected)


def test_antialiased_sampling_with_the_batch_sharded(mesh):
  image, logits = _inputs()
  grid = np.asarray(jax.jit(_layer)(image, logits)[1])
  sample = lambda im, gr: sj.grid_sample(im, gr, align_corners=True, antialias=True)
  want = np.asarray(sample(image, grid))
  batch = NamedSharding(mesh, P("batch"))
  got = jax.jit(sample)(jax.device_put(image, batch), jax.device_put(grid, batch))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=2e-5 * np.abs(want).max())


def test_pallas_sampling_with_the_batch_sharded(mesh):
  # The Pallas kernels (interpret mode on CPU) under jit with the batch split over the devices;
  # with explicit axes each device runs them on its own images (`ops.sharding.batch_parallel`).
  image, logits = _inputs()
  grid = np.asarray(jax.jit(_layer)(image, logits)[1])
  sample = lambda im, gr: sj.grid_sample(im, gr, align_corners=True, implementation="pallas")
  want = np.asarray(sj.grid_sample(image, grid, align_corners=True))
  batch = NamedSharding(mesh, P("batch"))
  got = jax.jit(sample, out_shardings=batch)(jax.device_put(image, batch),
                                             jax.device_put(grid, batch))
  assert got.sharding.spec == P("batch")
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)


def test_resizes_with_the_batch_sharded(mesh):
  image = np.random.default_rng(1).integers(0, 256, (DEVICES, 30, 20, 3), dtype=np.uint8)
  sharded = jax.device_put(image, NamedSharding(mesh, P("batch")))
  for fn in (sj.area_resize, sj.bilinear_resize):
    want = np.asarray(fn(image, (7, 9)))
    got = jax.jit(lambda x, fn=fn: fn(x, (7, 9)))(sharded)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-4)


def test_jit_with_the_image_sharded_over_its_rows(expected, mesh):
  image, logits = _inputs()
  rows = NamedSharding(mesh, P(None, "batch"))  # [B, H / 8, W, C] per device.
  image = jax.device_put(image, rows)
  assert image.addressable_shards[0].data.shape == (DEVICES, 5, 40, 3)
  replicated = NamedSharding(mesh, P())
  layer = jax.jit(_layer, in_shardings=(rows, replicated))
  sampled, grid = layer(image, logits)
  grad = jax.jit(jax.grad(_loss), in_shardings=(replicated, rows))(logits, image)
  _check((sampled, grid, grad), expected)
  # What the sampler gathers: the compiled program all-gathers the row-sharded image.
  hlo = layer.lower(image, logits).compile().as_text()
  assert "all-gather" in hlo or "all-to-all" in hlo


@pytest.mark.parametrize("fn", [
    functools.partial(sj.grid_sample, align_corners=True),
    functools.partial(sj.attraction_grid, out_shape=OUT, padding=4, fwhm=4.0),
])
def test_single_ops_under_vmap_of_pmap(fn):
  # Nested: pmap over devices, vmap within, the per-image results equal the batched op's.
  image, logits = _inputs(batch=2 * DEVICES)
  if fn.func is sj.grid_sample:
    grid = np.asarray(jax.jit(_layer)(image, logits)[1])
    args = (image.astype(np.float32), grid)
  else:
    args = (np.asarray(sj.softmax_saliency(logits)),)
  want = np.asarray(fn(*args))
  shaped = [a.reshape((DEVICES, 2) + a.shape[1:]) for a in args]
  got = jax.pmap(jax.vmap(lambda *xs: fn(*(x[None] for x in xs))[0]),
                 devices=jax.devices()[:DEVICES])(*shaped)
  np.testing.assert_allclose(np.asarray(got).reshape(want.shape), want, rtol=1e-4,
                             atol=2e-5 * np.abs(want).max())
