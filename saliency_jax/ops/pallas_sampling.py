"""Bilinear grid sampling as Pallas kernels, written for the GPU's Triton backend.

The same function, semantics and gradients as the XLA path of `sampling.grid_sample` (whose
coordinate, padding, tap and weight helpers the kernels call, so that the two cannot drift
apart); reach it through `grid_sample(..., implementation="pallas")`, which validates the inputs.
On CPU the kernels run in Pallas' interpret mode: that is how they are tested, and it is far
slower than the XLA path.

Layout (what lowers on Triton, and why this one):
- Program `(j, b)` computes the block of `block` consecutive output pixels `j * block + [0, block)`
  of batch element `b`, all channels. Every Triton tensor must have a power-of-two size, so
  `block` is a power of two, the channels are padded to the power of two `C'` inside the kernel
  (tiles are `[block, C']`), and the last block masks the pixels past `h * w`. The pixel blocks are the fastest-varying launch axis, so that programs running
  together read neighbouring parts of the same image (shared taps stay in L2).
- The image is not tiled: each program sees batch element `b`'s whole image, flattened to
  `[H * W * C]` (the BlockSpec squeezes the batch axis, so the Pallas lowering adds the batch
  offset, in 64 bits when the image needs it; Triton ignores `memory_space`, and a
  `memory_space=pl.ANY` spec would leave that offset to the kernel's int32 arithmetic), and reads each of the 2x2 taps as one gather at computed flat
  indices `(row * W + col) * C + c` (a ref indexed by an integer array is a load from a tensor of
  pointers in Triton). Where the taps are is known only after reading the grid, and a block of
  output pixels may read any part of the image, so there is no block of the image to stage;
  neighbouring output pixels share taps, which the caches serve.
- The grid (`[h * w * 2]`, read at `2 p` and `2 p + 1`) and the output (`[h * w * C]`, written at
  `p * C + c` under a mask) are likewise whole per batch element and accessed at computed
  indices. Padding the grid to a multiple of the block and slicing the output would each cost an
  extra pass in XLA over arrays as large as the output.
- Every read is in bounds without a mask: lanes past the last pixel read the last pixel, padded
  channel lanes re-read the last channel, and the tap patch is clamped into the image (the XLA
  path's trick). Only the stores are masked; their masked lanes also point past the end of the
  array: Pallas' interpret mode writes the old value back at masked lanes, in one scatter, and
  a padded channel lane would otherwise write the next pixel's first channel, which the order of
  a scatter's updates (unspecified) might let win over the lane that computed it.
- uint8 images are loaded as uint8 and converted to float at the taps only, as in the XLA path.
- The Triton backend is requested explicitly (`pallas.triton.CompilerParams`): a plain
  `pallas_call` may lower with Mosaic GPU instead, which does not take this kernel as written.

Gradients: a custom VJP with symbolic zeros, like the XLA path's. The gradient to the grid is a
second kernel of the same layout that re-gathers the taps, contracts them with the cotangent and
applies the chain rule through the coordinate transform (its forward-mode derivative, in the
kernel): gathers only, no scatter. The gradient to the image, a scatter-add, is the XLA path's,
computed only when the image is differentiated.
"""

import functools
from typing import NamedTuple

import jax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton
import jax.numpy as jnp

from saliency_jax.ops import taps

# Pixels x padded channels per program: 256 RGB pixels. A guess to be tuned on a GPU with
# benchmarks/sampler.py; with 4 warps it is 8 elements per thread.
_BLOCK_ELEMENTS = 1024
_NUM_WARPS = 4


class _KernelOptions(NamedTuple):
  align_corners: bool
  padding_mode: str
  block: int  # Output pixels per program, a power of two.
  interpret: bool


def default_block_pixels(num_pixels: int, channels: int) -> int:
  """Output pixels per program: `_BLOCK_ELEMENTS` elements, but no more than the output has."""
  per_pixel = pl.next_power_of_2(channels)
  return max(1, min(pl.next_power_of_2(num_pixels), _BLOCK_ELEMENTS // per_pixel))


@functools.partial(jax.jit,
                   static_argnames=("align_corners", "padding_mode", "interpret", "block_pixels"))
def grid_sample(
    image: jax.Array,
    grid: jax.Array,
    *,
    align_corners: bool,
    padding_mode: str,
    interpret: bool,
    block_pixels: int | None = None,
) -> jax.Array:
  """`sampling.grid_sample` by the Pallas kernels; inputs unchecked (validate them there).

  Args:
    image: `[B, H, W, C]` floating or uint8.
    grid: `[B, h, w, 2]` floating, `(x, y)` in `[-1, 1]`.
    align_corners: the `grid_sample` convention.
    padding_mode: "zeros", "border" or "reflection".
    interpret: run the kernels in Pallas' interpret mode (required on CPU).
    block_pixels: output pixels per program, a power of two; default `default_block_pixels`.

  Returns:
    `[B, h, w, C]`, in the image's dtype for floating images and float32 for uint8.
  """
  b, h, w, _ = grid.shape
  block = block_pixels or default_block_pixels(h * w, image.shape[-1])
  if block & (block - 1):
    raise ValueError(f"block_pixels must be a power of two; got {block_pixels}.")
  options = _KernelOptions(align_corners, padding_mode, block, interpret)
  return _sample(options, image, grid.astype(jnp.float32))


def _out_dtype(image_dtype) -> jnp.dtype:
  return image_dtype if jnp.issubdtype(image_dtype, jnp.floating) else jnp.dtype(jnp.float32)


def _pixel_lanes(num_pixels: int, block: int):
  """This program's output pixels `[block]`, which of them exist, and an in-bounds copy."""
  pixel = pl.program_id(0) * block + jnp.arange(block, dtype=jnp.int32)
  return pixel, pixel < num_pixels, jnp.minimum(pixel, num_pixels - 1)


def _channel_lanes(channels: int):
  """Channel lanes `[1, C']` (C' the power of two above C), and an in-bounds copy."""
  channel = jnp.arange(pl.next_power_of_2(channels), dtype=jnp.int32)[None, :]
  return channel, jnp.minimum(channel, channels - 1)


def _masked_index(index: jax.Array, mask: jax.Array, size: int) -> jax.Array:
  # Masked lanes point past the end: see the module docstring (interpret mode's masked stores).
  return jnp.where(mask, index, size)


def _coordinate(grid_ref, pixel: jax.Array, axis: int, size: int, options: _KernelOptions,
                derivative: bool = False):
  """Pixel coordinate along `axis` (0: x, 1: y) of the lanes' grid points, padding applied.

  With `derivative`, also d coordinate / d grid (the forward-mode derivative of the XLA path's
  transform, so PyTorch's conventions at and beyond the border carry over).
  """
  normalised = grid_ref[2 * pixel + axis]
  transform = functools.partial(taps.source_coordinate, size=size,
                                align_corners=options.align_corners,
                                padding_mode=options.padding_mode)
  if not derivative:
    return transform(normalised)
  return jax.jvp(transform, (normalised,), (jnp.ones_like(normalised),))


def _read_patch(image_ref, row: jax.Array, col: jax.Array, rows: int, cols: int, width: int,
                channels: int):
  """The (at most 2x2) tap patch from the flat image ref: `patch[r][c]` is `[block, C']`.

  One gather per tap; the padded channel lanes re-read the last channel (harmless duplicates,
  masked at the store and zeroed in the cotangent), so that no load needs a mask.
  """
  _, channel = _channel_lanes(channels)
  corner = ((row * width + col) * channels)[:, None] + channel
  return tuple(tuple(image_ref[corner + (r * width + c) * channels] for c in range(cols))
               for r in range(rows))


def _forward_kernel(image_ref, grid_ref, out_ref, *, size, options):
  height, width, channels = size
  num_pixels = grid_ref.shape[0] // 2
  pixel, valid, safe_pixel = _pixel_lanes(num_pixels, options.block)
  x = _coordinate(grid_ref, safe_pixel, 0, width, options)
  y = _coordinate(grid_ref, safe_pixel, 1, height, options)
  row, wy, _ = taps.axis_taps(y, height)
  col, wx, _ = taps.axis_taps(x, width)
  patch = _read_patch(image_ref, row, col, len(wy), len(wx), width, channels)
  out = taps.interpolate(patch, wy, wx)
  channel, _ = _channel_lanes(channels)
  mask = valid[:, None] & (channel < channels)
  index = _masked_index(pixel[:, None] * channels + channel, mask, out_ref.shape[0])
  pltriton.store(out_ref.at[index], out.astype(out_ref.dtype), mask=mask)


def _grid_grad_kernel(image_ref, grid_ref, g_ref, grad_ref, *, size, options):
  height, width, channels = size
  num_pixels = grid_ref.shape[0] // 2
  pixel, valid, safe_pixel = _pixel_lanes(num_pixels, options.block)
  x, dx = _coordinate(grid_ref, safe_pixel, 0, width, options, derivative=True)
  y, dy = _coordinate(grid_ref, safe_pixel, 1, height, options, derivative=True)
  row, wy, dwy = taps.axis_taps(y, height)
  col, wx, dwx = taps.axis_taps(x, width)
  patch = _read_patch(image_ref, row, col, len(wy), len(wx), width, channels)
  channel, safe_channel = _channel_lanes(channels)
  g = g_ref[safe_pixel[:, None] * channels + safe_channel].astype(jnp.float32)
  g = jnp.where(channel < channels, g, 0.0)
  dots = [[jnp.sum(g * tap.astype(jnp.float32), axis=1) for tap in patch_row]
          for patch_row in patch]
  grad_x, grad_y = taps.coordinate_grads(dots, wy, wx, dwy, dwx)
  index = _masked_index(2 * pixel, valid, grad_ref.shape[0])
  pltriton.store(grad_ref.at[index], grad_x * dx, mask=valid)
  pltriton.store(grad_ref.at[index + 1], grad_y * dy, mask=valid)


def _call(kernel, options: _KernelOptions, image: jax.Array, grid: jax.Array, *extra: jax.Array,
          out_shape: jax.ShapeDtypeStruct) -> jax.Array:
  """Runs `kernel` over (pixel blocks, batch) on `image`, `grid` and `extra`, all flattened.

  Every operand and the output (`out_shape`, `[B, N]`) is `[B, N]` with N its per-example size,
  and each program sees its example's whole `[N]`.
  """
  b, height, width, channels = image.shape
  num_pixels = grid.shape[1] * grid.shape[2]
  operands = [image, grid, *extra]
  operands = [x.reshape(b, -1) for x in operands]
  whole = lambda n: pl.BlockSpec((pl.squeezed, n), lambda j, i: (i, 0))
  return pl.pallas_call(
      functools.partial(kernel, size=(height, width, channels), options=options),
      out_shape=out_shape,
      grid=(pl.cdiv(num_pixels, options.block), b),
      in_specs=[whole(x.shape[1]) for x in operands],
      out_specs=whole(out_shape.shape[1]),
      # Selects the Triton backend explicitly (Pallas may default to Mosaic GPU).
      compiler_params=pltriton.CompilerParams(num_warps=_NUM_WARPS, num_stages=1),
      interpret=options.interpret,
      name=kernel.__name__.strip("_"),
  )(*operands)


def _forward(options: _KernelOptions, image: jax.Array, grid: jax.Array) -> jax.Array:
  b, h, w, _ = grid.shape
  channels = image.shape[-1]
  out = _call(_forward_kernel, options, image, grid, out_shape=jax.ShapeDtypeStruct(
      (b, h * w * channels), _out_dtype(image.dtype)))
  return out.reshape(b, h, w, channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _sample(options, image, grid):
  """Bilinear read of `image [B, H, W, C]` at `grid [B, h, w, 2]` (float32, normalised)."""
  return _forward(options, image, grid)


def _sample_fwd(options, image, grid):
  # symbolic_zeros=True: `.perturbed` tells whether the image is differentiated at all. The
  # image is a residual either way (the grid's gradient re-reads its taps; no copy is made);
  # the second reference marks that its own gradient is wanted.
  image_perturbed = image.perturbed
  image, grid = image.value, grid.value
  return _forward(options, image, grid), (image, grid, image if image_perturbed else None)


def _sample_bwd(options, residuals, g):
  image, grid, differentiated_image = residuals
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return None, None
  b, h, w, _ = grid.shape
  grad_grid = _call(_grid_grad_kernel, options, image, grid, g,
                    out_shape=jax.ShapeDtypeStruct((b, h * w * 2), jnp.float32))
  grad_image = None
  if differentiated_image is not None:
    height, width = image.shape[1:3]
    x = taps.source_coordinate(grid[..., 0], width, options.align_corners,
                                    options.padding_mode)
    y = taps.source_coordinate(grid[..., 1], height, options.align_corners,
                                    options.padding_mode)
    row, wy, _ = taps.axis_taps(y, height)
    col, wx, _ = taps.axis_taps(x, width)
    grad_image = taps.scatter_to_image(image, row, col, wy, wx, g.astype(jnp.float32))
  return grad_image, grad_grid.reshape(grid.shape)


_sample.defvjp(_sample_fwd, _sample_bwd, symbolic_zeros=True)
