"""The saliency sampler as one function: logits -> softmax saliency -> grid -> sampled image."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from saliency_jax.ops import attraction
from saliency_jax.ops import sampling
from saliency_jax.ops import validation


def softmax_saliency(logits: jax.Array, *, temperature: float = 1.0) -> jax.Array:
  """Softmax over all cells of each map: `[B, gh, gw]` logits -> `[B, gh, gw]` summing to 1.

  A temperature below 1 sharpens the map, so the sampler zooms harder (users of the authors'
  code raised the map to a power for the same effect).
  """
  if not hasattr(logits, "ndim"):
    logits = jnp.asarray(logits)
  if not temperature > 0:
    raise ValueError(f"temperature must be positive; got {temperature!r}.")
  if logits.ndim != 3:
    raise ValueError(f"saliency_logits must have shape [batch, grid_height, grid_width]; got "
                     f"shape {logits.shape}.")
  b, gh, gw = logits.shape
  flat = logits.astype(jnp.float32).reshape(b, gh * gw) / temperature
  return jax.nn.softmax(flat, axis=-1).reshape(b, gh, gw)


def saliency_sample(
    image: jax.Array,
    saliency_logits: jax.Array,
    out_shape: Sequence[int],
    *,
    temperature: float = 1.0,
    align_corners: bool = True,
    padding_mode: str = "zeros",
    implementation: str = "xla",
    **grid_options,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Resamples `image` so that salient regions get more of the output's pixels.

  The defaults reproduce the authors' numerics: edge padding, fwhm 13, padding 30, the grid
  upsampled with the half-pixel convention, and `align_corners=True` sampling (PyTorch 0.4's
  `grid_sample`) with zero padding.

  Args:
    image: `[B, H, W, C]` high-resolution image, float or uint8 (0..255).
    saliency_logits: `[B, gh, gw]` unnormalised saliency (e.g. the saliency network's output,
      upsampled to the grid size).
    out_shape: `(h, w)` of the sampled image.
    temperature: softmax temperature; lower zooms harder.
    align_corners: the `grid_sample` convention; True as the authors' code ran.
    padding_mode: the `grid_sample` padding mode.
    implementation: the `grid_sample` implementation: "xla", "pallas" or "auto".
    **grid_options: keyword options of `attraction_grid` (fwhm, padding, pad_mode, method).

  Returns:
    `(sampled [B, h, w, C], grid [B, h, w, 2], saliency [B, gh, gw])`; `sampled` as
    `grid_sample` returns it, `saliency` the softmax map (summing to 1 per image).
  """
  image = validation.check_image(image, "image")
  # Checked before any work (grid_sample checks it again, for its own callers).
  sampling._resolve_implementation(implementation)
  saliency = softmax_saliency(saliency_logits, temperature=temperature)
  if saliency.shape[0] != image.shape[0]:
    raise ValueError(f"saliency_logits and image must have the same batch size; got "
                     f"saliency_logits shape {saliency.shape} and image shape {image.shape}.")
  grid = attraction.attraction_grid(saliency, out_shape, **grid_options)
  sampled = sampling.grid_sample(image, grid, align_corners=align_corners,
                                 padding_mode=padding_mode, implementation=implementation)
  return sampled, grid, saliency
