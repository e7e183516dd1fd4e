"""Bilinear grid sampling with the semantics of `torch.nn.functional.grid_sample`.

`grid[b, i, j] = (x, y)` in `[-1, 1]` names the point of `image[b]` that output pixel `(i, j)`
reads, `x` along the width (column) and `y` along the height (row). With `align_corners=True`,
-1 and 1 are the centres of the corner pixels; with `align_corners=False` they are the outer
edges of the corner pixels (half a pixel further out). Points outside the image read zeros
("zeros"), the nearest border pixel ("border"), or the image mirrored at its border
("reflection"), exactly as PyTorch, including PyTorch's gradients at and beyond the border.

How the taps are read (the part that matters for speed): each output pixel reads one 2x2 patch
of whole pixels (all channels per tap). The patch's corner is clamped into the image,
and the bilinear weights are assigned to the patch cells whose position matches the wanted taps,
so taps that fall outside the image simply get no weight (zero padding) without any masking of
the gathered values. A uint8 image is gathered as uint8 and converted to float only at those taps:
no float copy of the high-resolution image is ever made. A custom VJP reuses the gathered patch
for the gradient to the grid, and pays for the scatter-add into the image only when the image is
itself being differentiated.
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from saliency_jax.ops import antialias as mipmap
from saliency_jax.ops import sharding
from saliency_jax.ops import taps
from saliency_jax.ops import validation

PADDING_MODES = ("zeros", "border", "reflection")
IMPLEMENTATIONS = ("xla", "pallas", "auto")

# What implementation="auto" picks per backend (jax.default_backend()): the measured winner of
# `benchmarks/sampler.py --implementations=xla,pallas` (benchmarks/README.md has the figures).
_AUTO_IMPLEMENTATION = {"cpu": "xla", "gpu": "pallas", "tpu": "xla"}
# The Pallas kernels index one image's `H * W * C` values in int32.
_PALLAS_MAX_ELEMENTS = 2**31 - 1


class _Options(NamedTuple):
  """What the sampling kernels need to know besides the arrays (static under `jit`)."""
  size: tuple[int, int]  # The image's (H, W).
  align_corners: bool
  padding_mode: str


def _pixel_coordinates(grid: jax.Array, options: _Options):
  """Pixel coordinates `x, y [B, h, w]` of the normalised `grid [B, h, w, 2]`, padding applied."""
  height, width = options.size
  x = taps.source_coordinate(grid[..., 0], width, options.align_corners, options.padding_mode)
  y = taps.source_coordinate(grid[..., 1], height, options.align_corners, options.padding_mode)
  return x, y


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _bilinear(options, image, grid):
  """Bilinear read of `image [B, H, W, C]` at the float32 `grid [B, h, w, 2]` (float32 out)."""
  x, y = _pixel_coordinates(grid, options)
  row, wy, _ = taps.axis_taps(y, options.size[0])
  col, wx, _ = taps.axis_taps(x, options.size[1])
  return taps.interpolate(taps.gather_taps(image, row, col, len(wy), len(wx)), wy, wx)


def _bilinear_fwd(options, image, grid):
  # symbolic_zeros=True: the primals arrive wrapped, with `.perturbed` telling whether the image
  # is being differentiated at all.
  image_perturbed = image.perturbed
  image, grid = image.value, grid.value
  x, y = _pixel_coordinates(grid, options)
  row, wy, _ = taps.axis_taps(y, options.size[0])
  col, wx, _ = taps.axis_taps(x, options.size[1])
  patch = taps.gather_taps(image, row, col, len(wy), len(wx))
  out = taps.interpolate(patch, wy, wx)
  # The patches stay in the image's dtype (uint8 is 4x smaller than float32); the coordinates
  # and weights are cheap to re-derive from the grid. The image itself is kept only when its
  # gradient is wanted.
  return out, (patch, grid, image if image_perturbed else None)


def _bilinear_bwd(options, residuals, g):
  patch, grid, image = residuals
  # The coordinates and their derivatives to the grid in one forward-mode pass, so that both
  # components of the grid's gradient come out of one expression (one pass over the cotangent
  # and the patches) instead of two slices' transposes added together.
  (x, y), (dx, dy) = jax.jvp(lambda gr: _pixel_coordinates(gr, options), (grid,),
                             (jnp.ones_like(grid),))
  row, wy, dwy = taps.axis_taps(y, options.size[0])
  col, wx, dwx = taps.axis_taps(x, options.size[1])
  g = jnp.zeros(x.shape + patch[0][0].shape[-1:], jnp.float32) if isinstance(
      g, jax.custom_derivatives.SymbolicZero) else g.astype(jnp.float32)
  # Contract the channels with the cotangent first, once per tap.
  dots = [[taps.channel_dot(g, tap) for tap in patch_row] for patch_row in patch]
  grad_x, grad_y = taps.coordinate_grads(dots, wy, wx, dwy, dwx)
  grad_image = None if image is None else taps.scatter_to_image(image, row, col, wy, wx, g)
  return grad_image, jnp.stack([grad_x * dx, grad_y * dy], axis=-1)


_bilinear.defvjp(_bilinear_fwd, _bilinear_bwd, symbolic_zeros=True)


@functools.partial(jax.jit, static_argnames=("align_corners", "padding_mode"))
def _grid_sample(image, grid, align_corners, padding_mode):
  options = _Options(tuple(image.shape[1:3]), align_corners, padding_mode)
  out = _bilinear(options, image, grid.astype(jnp.float32))
  return out.astype(image.dtype) if jnp.issubdtype(image.dtype, jnp.floating) else out


def grid_sample(
    image: jax.Array,
    grid: jax.Array,
    *,
    align_corners: bool = False,
    padding_mode: str = "zeros",
    implementation: str = "xla",
    antialias: bool = False,
) -> jax.Array:
  """Samples `image` bilinearly at `grid`, as `torch.nn.functional.grid_sample(mode="bilinear")`.

  Args:
    image: `[B, H, W, C]` float32, bfloat16 (any float) or uint8. uint8 is read as 0..255 values
      and converted to float only at the sampled taps.
    grid: `[B, h, w, 2]` floating, the `(x, y)` = (column, row) positions in `[-1, 1]`.
    align_corners: True: -1 and 1 are the centres of the corner pixels (PyTorch before 1.3, the
      authors' code); False: their outer edges (PyTorch's default today).
    padding_mode: "zeros", "border" or "reflection": what points outside the image read.
    implementation: "xla" (the portable gather formulation above), "pallas" (the Pallas kernels
      of `pallas_sampling`, written for the GPU's Triton backend; in Pallas' slow interpret mode
      when the default backend is the CPU, which is meant for testing), or "auto" (whichever
      measured faster on the default backend: "pallas" on GPUs, "xla" elsewhere and for images
      of more than 2^31 - 1 values, which the kernels cannot address). The numbers agree to
      float32 rounding. A `pallas_call` has no partitioning rule: under a `jit` whose batch is
      sharded automatically over several devices XLA would gather the whole batch onto each,
      so there use "xla" (or `shard_map`; explicitly sharded arrays are split per device here).
    antialias: True: each output pixel averages the image over its footprint, estimated from the
      grid's local Jacobian, by trilinear reads of an area-averaged pyramid (see `antialias`;
      `implementation` does not apply: on the CPU the forward value comes from a fused kernel
      when it could be built, see `native`, else from XLA operations); where the grid samples at
      least as densely as the image this is plain bilinear sampling. False: PyTorch's bilinear
      sampling.

  Returns:
    `[B, h, w, C]`: in the image's dtype for floating images (computed in float32), float32 in
    0..255 for uint8. NaN in the grid gives NaN at those outputs under `jit`.

  Gradients flow to the grid always and to a floating image when it is differentiated; the
  scatter-add into the image is not computed otherwise (on the CPU, for float32 images, it is a
  fused kernel when `native` could build it).

  Raises:
    ValueError: on bad shapes, dtypes or options, and (outside `jit`) a grid holding NaN or inf.
  """
  image = validation.check_image(image, "image")
  if not (jnp.issubdtype(image.dtype, jnp.floating) or image.dtype == jnp.uint8):
    raise ValueError(f"image must be floating or uint8; got dtype {image.dtype}.")
  grid = validation.check_grid(grid)
  if grid.shape[0] != image.shape[0]:
    raise ValueError(f"grid and image must have the same batch size; got grid shape "
                     f"{grid.shape} and image shape {image.shape}.")
  if padding_mode not in PADDING_MODES:
    raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}.")
  align_corners = validation.check_bool(align_corners, "align_corners")
  requested = implementation
  implementation = resolve_implementation(implementation)
  antialias = validation.check_bool(antialias, "antialias")
  validation.check_finite(grid, "grid")
  if antialias:
    if mipmap.atlas_rows(*image.shape[:3]) > mipmap.INT32_MAX:
      raise ValueError(f"antialias=True addresses its pyramid with int32 indices; image shape "
                       f"{image.shape} is too large: sample smaller batches.")
    # check=False: on the CPU the value may come from an FFI kernel (`native`), whose outputs
    # carry no record of how they vary over the devices.
    out = sharding.batch_parallel(functools.partial(
        mipmap.antialiased_sample, align_corners=align_corners,
        padding_mode=padding_mode), check=False)(image, grid)
    return out.astype(image.dtype) if jnp.issubdtype(image.dtype, jnp.floating) else out
  if implementation == "pallas" and math.prod(image.shape[1:]) > _PALLAS_MAX_ELEMENTS:
    if requested != "auto":
      raise ValueError(f"implementation='pallas' addresses each image with int32 indices, so it "
                       f"takes at most {_PALLAS_MAX_ELEMENTS} values per image; got image shape "
                       f"{image.shape}: use implementation='xla'.")
    implementation = "xla"
  if implementation == "pallas":
    # Imported here: the XLA path must not pay for (or depend on) importing Pallas.
    from saliency_jax.ops import pallas_sampling
    return sharding.batch_parallel(functools.partial(
        pallas_sampling.grid_sample, align_corners=align_corners, padding_mode=padding_mode,
        interpret=jax.default_backend() == "cpu"), check=False)(image, grid)
  return sharding.batch_parallel(functools.partial(
      _grid_sample, align_corners=align_corners, padding_mode=padding_mode))(image, grid)


def resolve_implementation(implementation: str) -> str:
  """Checks `implementation`; "auto" becomes the default backend's measured winner."""
  if not isinstance(implementation, str) or implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}; got {implementation!r}.")
  if implementation == "auto":
    return _AUTO_IMPLEMENTATION.get(jax.default_backend(), "xla")
  return implementation
