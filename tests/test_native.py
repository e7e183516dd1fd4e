"""The CPU kernels of `ops.native` against the XLA formulations they replace.

References: `antialias._xla_sample` (itself held to supersampled footprints in test_antialias.py),
`inverse._invert_lattice_general` (held to a NumPy brute force in test_inverse.py, which now
runs the kernel: so both formulations meet the same reference), and the transpose of the tap
gathers by `jax.vjp` for the image gradient (test_sampling.py holds it to PyTorch's). Each case calls the two side by
side; the build and its fallback run in real subprocesses.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax.ops import antialias
from saliency_jax.ops import inverse
from saliency_jax.ops import native
from saliency_jax.ops import taps
from tests.references import torch_inverse
from tests.test_inverse import folded_grid
from tests.test_inverse import forward
from tests.test_inverse import smooth_grid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(native._compiler() is None,
                                reason="no C++ compiler: the XLA formulation runs everywhere")


def test_kernels_build():
  # With a compiler and these headers the kernels must build: a failure is a defect here, not a
  # skip (the fallback is for machines without a compiler).
  assert native.available()


def _attraction(b, out_hw, seed, peak=8.0, size=9):
  rng = np.random.default_rng(seed)
  saliency = rng.uniform(0.1, 1.0, (b, size, size)).astype(np.float32)
  saliency[:, 2:4, 5:7] *= peak
  saliency /= saliency.sum(axis=(1, 2), keepdims=True)
  return np.array(sj.attraction_grid(saliency, out_hw))


def _image(shape, dtype, seed=0):
  rng = np.random.default_rng(seed)
  if dtype == np.uint8:
    return rng.integers(0, 256, shape, dtype=np.uint8)
  return rng.normal(size=shape).astype(dtype)


def _check_antialias(image, grid, align_corners, padding_mode):
  got = native.antialiased_sample(image, grid, align_corners, padding_mode)
  want = antialias._xla_sample(image, grid, align_corners, padding_mode)
  # float32 rounding of 0..255 values (uint8) or of unit-variance ones.
  atol = 1e-3 if image.dtype == np.uint8 else 1e-5
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=atol,
                             err_msg=f"{image.shape=} {align_corners=} {padding_mode=}")


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_antialias_kernel_matches_xla(dtype):
  # 5 images (the per-image path with 2 threads) and 1 (the per-row path); odd sizes replicate
  # the last row and column into the pyramid; grids that compress (levels 1..3), magnify (level
  # 0 alone) and reach outside the image; every padding mode and convention.
  for batch in (5, 1):
    image = _image((batch, 67, 45, 3), dtype, seed=batch)
    grid = _attraction(batch, (21, 17), seed=batch) * np.float32(1.15)
    for align_corners in (True, False):
      for padding_mode in ("zeros", "border", "reflection"):
        _check_antialias(image, grid, align_corners, padding_mode)


@pytest.mark.parametrize("channels", [1, 4, 5])
def test_antialias_kernel_channels(channels):
  # 1 and 4 channels have their own compiled loops, 5 the general one; uint8 4-channel pixels
  # are read as one vector (up to a buffer's last pixel).
  for dtype in (np.uint8, np.float32):
    image = _image((4, 33, 30, channels), dtype, seed=channels)
    _check_antialias(image, _attraction(4, (11, 9), seed=channels), False, "zeros")


def test_antialias_kernel_edge_cases():
  image = _image((2, 1, 1, 3), np.uint8)  # A single pixel: no pyramid.
  grid = _attraction(2, (4, 4), seed=0)
  np.testing.assert_allclose(np.asarray(native.antialiased_sample(image, grid, True, "zeros")),
                             np.asarray(antialias._xla_sample(image, grid, True, "zeros")))
  image = _image((2, 16, 16, 3), np.float32)
  line = _attraction(2, (1, 6), seed=1)  # One output row: no footprint, plain bilinear.
  np.testing.assert_allclose(np.asarray(native.antialiased_sample(image, line, False, "border")),
                             np.asarray(antialias._xla_sample(image, line, False, "border")),
                             atol=1e-6)
  grid = _attraction(2, (5, 5), seed=2)
  grid[0, 2, 3, 0] = np.nan  # That pixel and its neighbours' footprints: NaN, as XLA gives.
  got = np.asarray(native.antialiased_sample(image, grid, False, "zeros"))
  want = np.asarray(antialias._xla_sample(image, grid, False, "zeros"))
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  assert np.isnan(got[0, 2, 3]).all() and not np.isnan(got[1]).any()
  np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], atol=1e-5)


def test_antialias_under_jit_vmap_and_grad():
  image = _image((2, 28, 24, 3), np.float32)
  grid = _attraction(2, (8, 7), seed=3)
  eager = np.asarray(sj.grid_sample(image, grid, antialias=True))
  np.testing.assert_allclose(eager, np.asarray(antialias._xla_sample(image, grid, False, "zeros")),
                             atol=1e-5)
  vmapped = jax.vmap(lambda i, g: sj.grid_sample(i[None], g[None], antialias=True)[0])(image, grid)
  np.testing.assert_allclose(np.asarray(vmapped), eager, atol=1e-6)
  # Gradients are the XLA formulation's, to the grid and to a floating image.
  loss = lambda f: lambda i, g: jnp.sum(jnp.sin(f(i, g)))
  fused = loss(lambda i, g: sj.grid_sample(i, g, antialias=True))
  xla = loss(lambda i, g: antialias._xla_sample(i, g, False, "zeros"))
  for a, b in zip(jax.grad(fused, (0, 1))(image, grid), jax.grad(xla, (0, 1))(image, grid)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


def test_float_image_gradient_matches_finite_differences():
  # The pyramid of a floating image is differentiated (its reduce_window is a summing one). The
  # output is linear in the image, so central differences are exact up to float32 rounding.
  image = jnp.asarray(_image((1, 24, 20, 1), np.float32))
  grid = jnp.asarray(_attraction(1, (6, 5), seed=4))
  weights = jnp.asarray(_image((1, 6, 5, 1), np.float32, seed=8))
  direction = jnp.asarray(_image((1, 24, 20, 1), np.float32, seed=9))
  f = lambda i: jnp.sum(weights * sj.grid_sample(i, grid, antialias=True))
  numeric = (f(image + direction) - f(image - direction)) / 2
  analytic = jnp.sum(jax.grad(f)(image) * direction)
  np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-4)


def _xla_inverse(grid, xs, ys):
  b = grid.shape[0]
  xs = jnp.broadcast_to(jnp.asarray(xs), (b, xs.shape[-1]))
  ys = jnp.broadcast_to(jnp.asarray(ys), (b, ys.shape[-1]))
  u, v, covered = inverse._invert_lattice_general(jnp.asarray(grid), xs, ys)
  return np.asarray(u), np.asarray(v), np.asarray(covered)


def _native_inverse(grid, xs, ys):
  b = grid.shape[0]
  inv, covered = native.invert_lattice(jnp.asarray(grid), jnp.broadcast_to(xs, (b, len(xs))),
                                       jnp.broadcast_to(ys, (b, len(ys))))
  return np.asarray(inv[..., 0]), np.asarray(inv[..., 1]), np.asarray(covered)


@pytest.mark.parametrize("name, grid", [
    ("smooth", smooth_grid(3, 6, 7, amp=0.1, seed=5)),
    ("attraction", _attraction(3, (13, 11), seed=6, peak=30.0, size=11)),
    # A zoom onto the centre: most targets are outside the grid's image (uncovered).
    ("zoom", smooth_grid(2, 5, 5, amp=0.02, seed=7) * np.float32(0.4) + np.float32(0.1)),
    # More cells than targets (a feature map unwarped through a full-resolution grid).
    ("fine", smooth_grid(2, 61, 53, amp=0.05, seed=8)),
])
def test_inverse_kernel_matches_xla(name, grid):
  xs, ys = (inverse.lattice(9), inverse.lattice(7)) if name == "fine" else (
      inverse.lattice(37), inverse.lattice(29))
  u, v, covered = _native_inverse(grid, xs, ys)
  u_ref, v_ref, covered_ref = _xla_inverse(grid, xs, ys)
  # The XLA path may miss a target on a clipped border that the kernel's exact solve finds
  # (inverse.py's docstring): never the reverse, and only a few.
  assert np.all(covered | ~covered_ref), name
  assert (covered & ~covered_ref).sum() <= 2, name
  both = covered & covered_ref
  np.testing.assert_allclose(u[both], u_ref[both], atol=2e-5)
  np.testing.assert_allclose(v[both], v_ref[both], atol=2e-5)
  # Every covered target maps back onto itself through the grid (its defining property).
  px, py = np.meshgrid(np.asarray(xs), np.asarray(ys))
  back = forward(grid, np.stack([u, v], -1))
  assert np.abs(back[..., 0] - px)[covered].max() < 1e-5
  assert np.abs(back[..., 1] - py)[covered].max() < 1e-5


def test_inverse_kernel_misses_nothing_that_is_covered_on_the_benchmarks_grids():
  """benchmarks/unzoom.py's grids (31x31 attraction grids of random saliency, clipped borders and
  a few folded corners) at its lattice: every target that the XLA path covers and the kernel
  does not must be uncovered by the brute-force solve (tests/references) too. (A kernel whose
  walk stopped at a degenerate border cell missed about 100 here.)"""
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(32, 31, 31)), jnp.float32)
  grid = np.asarray(sj.attraction_grid(sj.softmax_saliency(logits), (31, 31)))
  xs = inverse.lattice(224)
  _, _, covered = _native_inverse(grid, xs, xs)
  _, _, covered_xla = _xla_inverse(grid, xs, xs)
  missed = np.argwhere(covered_xla & ~covered)
  lattice = np.asarray(xs)
  for image in np.unique(missed[:, 0]):
    rows, cols = missed[missed[:, 0] == image, 1:].T
    points = np.stack([lattice[cols], lattice[rows]], -1)[None]
    _, truly = torch_inverse.invert(grid[image:image + 1], points, tol=1e-7)
    assert not truly.numpy().any(), (image, rows, cols)


def _winding(border, px, py):
  """The winding number of the closed polygon `border [N, 2]` around each point (px, py)."""
  a, b = border, np.roll(border, -1, axis=0)
  up = (a[:, 1, None] <= py) & (b[:, 1, None] > py)
  down = (a[:, 1, None] > py) & (b[:, 1, None] <= py)
  side = ((b[:, 0, None] - a[:, 0, None]) * (py - a[:, 1, None])
          - (px - a[:, 0, None]) * (b[:, 1, None] - a[:, 1, None]))
  return (up & (side > 0)).sum(0) - (down & (side < 0)).sum(0)


def test_inverse_kernel_finds_targets_that_only_a_fold_covers():
  """The kernel skips targets outside the region the grid's border encloses (winding number 0)
  unless a folded cell's box holds them: `folded_grid` covers such targets. Reference: the
  brute-force float64 solve in every cell (tests/references)."""
  grid = folded_grid()
  xs, ys = inverse.lattice(41), inverse.lattice(37)
  px, py = (a.ravel() for a in np.meshgrid(np.asarray(xs), np.asarray(ys)))
  _, reference = torch_inverse.invert(grid, np.stack([px, py], -1)[None])
  reference = reference.numpy()[0].reshape(len(ys), len(xs))
  border = np.concatenate([grid[0, 0, :-1], grid[0, :-1, -1], grid[0, -1, :0:-1],
                           grid[0, :0:-1, 0]])
  winding = _winding(border, px, py).reshape(reference.shape)
  assert (reference & (winding == 0)).sum() >= 5  # What the fold alone covers.
  _, _, covered = _native_inverse(grid, xs, ys)
  assert np.all(covered[0] | ~reference)
  # The kernel's cover tolerance (1e-4 of a cell) may take in a target on a cell's edge.
  assert (covered[0] & ~reference).sum() <= 2


def test_inverse_kernel_degenerate_and_nan_grids():
  grid = _attraction(2, (9, 9), seed=8)
  grid[:, :, :3, 0] = -1.0  # Zero-width cells, as clipping leaves them at a border.
  grid[1, 4, 4] = np.nan
  xs, ys = inverse.lattice(25), inverse.lattice(21)
  u, v, covered = _native_inverse(grid, xs, ys)
  assert np.isnan(u[1]).all() and not covered[1].any()
  assert np.isfinite(u[0]).all() and np.isfinite(v[0]).all()
  u_ref, v_ref, covered_ref = _xla_inverse(grid[:1], xs, ys)
  assert np.all(covered[0] | ~covered_ref[0])
  both = covered[0] & covered_ref[0]
  np.testing.assert_allclose(u[0][both], u_ref[0][both], atol=2e-5)
  # The public op poisons the NaN image too (under jit: outside it, NaN is refused).
  inv, cov = jax.jit(lambda g: sj.invert_grid(g, (21, 25)))(grid)
  assert np.isnan(np.asarray(inv)[1]).all() and not np.asarray(cov)[1].any()


def test_inverse_gradient_is_the_xla_paths():
  grid = jnp.asarray(_attraction(2, (8, 9), seed=10))
  # Targets off the cells' edges (where the map is not differentiable and the two paths may pick
  # either neighbouring cell) that both paths cover: there both must give the loss's gradient.
  rng = np.random.default_rng(11)
  xs = jnp.asarray(np.sort(rng.uniform(-0.95, 0.95, 30)), jnp.float32)
  ys = jnp.asarray(np.sort(rng.uniform(-0.95, 0.95, 26)), jnp.float32)
  _, _, covered = _native_inverse(np.asarray(grid), xs, ys)
  _, _, covered_ref = _xla_inverse(grid, xs, ys)
  mask = covered & covered_ref

  def loss(fn):
    def f(g):
      u, v, _ = fn(g)
      return jnp.sum(jnp.where(mask, jnp.sin(3 * u) + jnp.cos(2 * v), 0.0))
    return f

  split = lambda inv, covered: (inv[..., 0], inv[..., 1], covered)
  fused = loss(lambda g: split(*inverse.invert_lattice(g, xs, ys)))
  xla = loss(lambda g: inverse._invert_lattice_general(
      g, jnp.broadcast_to(xs, (2, 30)), jnp.broadcast_to(ys, (2, 26))))
  # The two solutions agree to float32 rounding (~1e-6), and the gradient's 1 / det J amplifies
  # that in the most magnified cells: 1e-3 relative.
  np.testing.assert_allclose(np.asarray(jax.grad(fused)(grid)), np.asarray(jax.grad(xla)(grid)),
                             rtol=2e-3, atol=1e-3)
  # And to the targets (per image: each image's row of targets).
  targets = lambda fn: lambda a, b: loss(lambda g: fn(g, a, b))(grid)
  fused_t = targets(lambda g, a, b: split(*inverse.invert_lattice(g, a, b)))
  xla_t = targets(inverse._invert_lattice_general)
  a, b = jnp.broadcast_to(xs, (2, 30)), jnp.broadcast_to(ys, (2, 26))
  for got, want in zip(jax.grad(fused_t, (0, 1))(a, b), jax.grad(xla_t, (0, 1))(a, b)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-3, atol=1e-3)
  # With the uncovered targets filled (invert_grid), the loss over every target: a filled value
  # does not depend on the grid, in either path.
  filled = lambda fn: lambda g: jnp.sum(jnp.where(
      mask | ~covered, jnp.sin(3 * fn(g)[0][..., 0]) + jnp.cos(2 * fn(g)[0][..., 1]), 0.0))
  fused = filled(lambda g: inverse.invert_lattice(g, xs, ys, fill=inverse.UNCOVERED))
  xla = filled(lambda g: inverse._finish(*inverse._invert_lattice_general(
      g, jnp.broadcast_to(xs, (2, 30)), jnp.broadcast_to(ys, (2, 26))), g, inverse.UNCOVERED))
  assert (~covered).sum() > 0
  np.testing.assert_allclose(np.asarray(jax.grad(fused)(grid)), np.asarray(jax.grad(xla)(grid)),
                             rtol=2e-3, atol=1e-3)


def _python(code, **env):
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                        env={**os.environ, **env}, timeout=300)


def test_build_is_cached_and_a_failed_build_falls_back(tmp_path):
  # 8x8 ones read at a 4x4 lattice (2x compression), whichever path computes them.
  t = np.linspace(-1, 1, 4, dtype=np.float32)
  expected = float(antialias._xla_sample(np.ones((1, 8, 8, 1), np.float32),
                                         np.stack(np.meshgrid(t, t), -1)[None], False,
                                         "zeros").sum())
  code = ("import numpy as np, saliency_jax as sj; from saliency_jax.ops import native; "
          "t = np.linspace(-1, 1, 4, dtype=np.float32); "
          "g = np.stack(np.meshgrid(t, t), -1)[None]; "
          "print(native.available(), float(sj.grid_sample(np.ones((1, 8, 8, 1), np.float32), g, "
          "antialias=True).sum()))")
  cache = str(tmp_path / "cache")
  first = _python(code, SALIENCY_JAX_CACHE=cache)
  assert first.returncode == 0, first.stderr
  assert first.stdout.split() == ["True", str(expected)]
  built = sorted(os.listdir(cache))
  assert [f for f in built if f.endswith(".so")] == [native.library_path(native._headers()).name]
  # A second process loads the cached library: no compiler needed.
  again = _python(code, SALIENCY_JAX_CACHE=cache, CXX="/nonexistent/c++")
  assert again.returncode == 0 and again.stdout.split() == ["True", str(expected)], again.stderr
  # A compiler that fails: a warning, and the XLA formulation gives the same numbers.
  failing = _python(code, SALIENCY_JAX_CACHE=str(tmp_path / "other"), CXX="false")
  assert failing.returncode == 0 and failing.stdout.split() == ["False", str(expected)], failing.stderr
  assert "could not be built" in failing.stderr
  off = _python(code, SALIENCY_JAX_CACHE=cache, SALIENCY_JAX_NATIVE="0")
  assert off.returncode == 0 and off.stdout.split() == ["False", str(expected)], off.stderr


@pytest.mark.parametrize("shape", [(3, 9, 7, 5), (1, 1, 6, 2), (2, 5, 1, 3)])
def test_image_gradient_kernel_matches_xla(shape):
  # grid_sample's gradient to a float32 image (the scatter-add of its taps), every padding mode
  # and convention, on images with a single row or column too (patches of one tap that way).
  rng = np.random.default_rng(sum(shape))
  image = jnp.asarray(rng.normal(size=shape), jnp.float32)
  grid = jnp.asarray(rng.uniform(-1.3, 1.3, (shape[0], 6, 4, 2)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(shape[0], 6, 4, shape[-1])), jnp.float32)
  for align_corners in (True, False):
    for padding_mode in ("zeros", "border", "reflection"):
      f = lambda i: jnp.sum(weights * sj.grid_sample(i, grid, align_corners=align_corners,
                                                       padding_mode=padding_mode))
      got = jax.grad(f)(image)
      # The same cotangent through XLA's scatter: the transpose of the tap gathers (jax.vjp of
      # the plain reads, which never take the kernel).
      x = taps.source_coordinate(grid[..., 0], shape[2], align_corners, padding_mode)
      y = taps.source_coordinate(grid[..., 1], shape[1], align_corners, padding_mode)
      row, wy, _ = taps.axis_taps(y, shape[1])
      col, wx, _ = taps.axis_taps(x, shape[2])
      read = lambda i: taps.interpolate(taps.gather_taps(i, row, col, len(wy), len(wx)), wy, wx)
      _, pullback = jax.vjp(read, image)
      np.testing.assert_allclose(np.asarray(got), np.asarray(pullback(weights)[0]), atol=1e-5,
                                 err_msg=f"{align_corners=} {padding_mode=}")
