"""The saliency sampler as one function: logits -> softmax saliency -> grid -> sampled image."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import attraction
from saliency_jax.ops import sampling
from saliency_jax.ops import validation


def softmax_saliency(logits: jax.Array, *, temperature: float | jax.Array = 1.0) -> jax.Array:
  """Softmax over all cells of each map: `[B, gh, gw]` logits -> `[B, gh, gw]` summing to 1.

  A temperature below 1 sharpens the map, so the sampler zooms harder (users of the authors'
  code raised the map to a power for the same effect); towards 0 the map tends to the one-hot
  map of the largest logit, which is what any temperature below float32's smallest normal
  number gives.

  Args:
    logits: `[B, gh, gw]` real.
    temperature: a positive scalar, a Python number or a (possibly traced) 0-d array, so that
      it can follow a schedule under `jit`.

  Returns:
    `[B, gh, gw]` float32. Under `jit` (where values cannot be checked), NaN or infinite logits
    and a non-positive or NaN temperature give NaN in the image's map.

  Raises:
    ValueError: on a bad shape or temperature, or, outside `jit`, on non-finite logits.
  """
  if not hasattr(logits, "ndim"):
    logits = jnp.asarray(logits)
  if logits.ndim != 3:
    raise ValueError(f"saliency_logits must have shape [batch, grid_height, grid_width]; got "
                     f"shape {logits.shape}.")
  if not (jnp.issubdtype(logits.dtype, jnp.floating) or jnp.issubdtype(logits.dtype, jnp.integer)):
    raise ValueError(f"saliency_logits must be a real array; got dtype {logits.dtype}.")
  temperature = _check_temperature(temperature)
  validation.check_finite(logits, "saliency_logits")
  b, gh, gw = logits.shape
  flat = logits.astype(jnp.float32).reshape(b, gh * gw)
  # Shifted by the maximum before the division, so that a tiny temperature gives -inf (weight 0)
  # for the others rather than inf - inf; the floor keeps the maximum's cell at 0 / t = 0.
  flat = flat - jax.lax.stop_gradient(jnp.max(flat, axis=-1, keepdims=True))
  tiny = float(jnp.finfo(jnp.float32).tiny)
  if isinstance(temperature, jax.core.Tracer):
    saliency = jax.nn.softmax(flat / jnp.maximum(temperature, tiny), axis=-1)
    saliency = jnp.where(temperature > 0, saliency, jnp.nan)
  else:
    # Clamped on the host: a subnormal float32 temperature would be flushed to zero on device.
    saliency = jax.nn.softmax(flat / max(temperature, tiny), axis=-1)
  return saliency.reshape(b, gh, gw)


def saliency_information(saliency: jax.Array) -> jax.Array:
  """`[B, gh, gw]` maps summing to 1 -> `[B]` their KL divergence from the uniform map, in nats.

  `log(gh * gw) - entropy`: 0 for the uniform map (the identity grid), `log(gh * gw)` for a
  one-hot one. As a loss term (`SaliencySampler`'s `saliency_cost`) it charges the warp for the
  information the map puts into it, so the map stays uniform unless moving away pays in the
  task's loss.

  Raises:
    ValueError: if `saliency` is not of rank 3.
  """
  if not hasattr(saliency, "ndim"):
    saliency = jnp.asarray(saliency)
  if saliency.ndim != 3:
    raise ValueError(f"saliency must have shape [batch, grid_height, grid_width]; got shape "
                     f"{saliency.shape}.")
  b, gh, gw = saliency.shape
  flat = saliency.astype(jnp.float32).reshape(b, gh * gw)
  # Floored inside the log, so that an empty cell gives 0 log 0 = 0 with a finite gradient.
  log_flat = jnp.log(jnp.maximum(flat, jnp.finfo(jnp.float32).tiny))
  return jnp.sum(flat * log_flat, axis=-1) + np.log(gh * gw)


def saliency_divergence(target: jax.Array, saliency: jax.Array) -> jax.Array:
  """`[B, gh, gw]` target densities and maps, each summing to 1 -> `[B]` KL(target || map), nats.

  0 where the map is the target. As a loss (the dense model's box density, the sampler's
  evidence supervision) it pulls the map's mass to where the target's is: its gradient in the
  map is `-target / map`, so a cell the target leaves empty costs nothing and one the map
  leaves empty costs much. The target is treated as given (no gradient flows to it).

  Raises:
    ValueError: if either is not of rank 3, or their shapes differ.
  """
  target, saliency = jnp.asarray(target), jnp.asarray(saliency)
  if saliency.ndim != 3 or target.shape != saliency.shape:
    raise ValueError(f"target and saliency must both have shape [batch, grid_height, "
                     f"grid_width]; got shapes {target.shape} and {saliency.shape}.")
  tiny = jnp.finfo(jnp.float32).tiny
  target = jax.lax.stop_gradient(target.astype(jnp.float32))
  # Floored inside the logs: an empty target cell gives 0 log 0 = 0, an empty map cell a large
  # but finite cost.
  log_ratio = (jnp.log(jnp.maximum(target, tiny))
               - jnp.log(jnp.maximum(saliency.astype(jnp.float32), tiny)))
  return jnp.sum(target * log_ratio, axis=(1, 2))


def _check_temperature(temperature):
  """A concrete temperature must be a positive finite real scalar; a traced one a 0-d real."""
  if isinstance(temperature, jax.core.Tracer):
    if temperature.ndim != 0 or not jnp.issubdtype(temperature.dtype, jnp.floating):
      raise ValueError(f"temperature must be a floating scalar; got a traced value of shape "
                       f"{temperature.shape} and dtype {temperature.dtype}.")
    return temperature
  value = temperature
  if isinstance(value, (jax.Array, np.ndarray)):
    if value.ndim != 0:
      raise ValueError(f"temperature must be a scalar; got an array of shape {value.shape}.")
    value = value.item()
  return validation.check_positive_number(value, "temperature")


def saliency_sample(
    image: jax.Array,
    saliency_logits: jax.Array,
    out_shape: Sequence[int],
    *,
    temperature: float | jax.Array = 1.0,
    align_corners: bool = True,
    padding_mode: str = "zeros",
    implementation: str = "xla",
    antialias: bool = False,
    exact_identity: bool = False,
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
    temperature: softmax temperature, a positive scalar (traced under `jit` if need be); lower
      zooms harder.
    align_corners: the `grid_sample` convention; True as the authors' code ran.
    padding_mode: the `grid_sample` padding mode.
    implementation: the `grid_sample` implementation: "xla", "pallas" or "auto".
    antialias: `grid_sample`'s anti-aliasing (each output pixel averages its footprint).
    exact_identity: True: the grid is `attraction_grid(..., align_corners=align_corners)`, so
      that a uniform map samples exactly as uniform downsampling does (area averaging with
      `antialias` at integer factors); False: the authors' upsampling of the grid.
    **grid_options: keyword options of `attraction_grid` (fwhm, padding, pad_mode, method,
      axis_aligned, max_magnification). Here `max_magnification` may also be "source": the
      cap at which the output samples the source at its own resolution (relative to uniform
      sampling, `sqrt(H W / (h w))`, at least 1), so that no region is magnified past the
      detail the image holds.

  Returns:
    `(sampled [B, h, w, C], grid [B, h, w, 2], saliency [B, gh, gw])`; `sampled` as
    `grid_sample` returns it, `saliency` the softmax map (summing to 1 per image).
  """
  image = validation.check_image(image, "image")
  # Checked before any work (grid_sample checks it again, for its own callers).
  sampling.resolve_implementation(implementation)
  saliency = softmax_saliency(saliency_logits, temperature=temperature)
  if saliency.shape[0] != image.shape[0]:
    raise ValueError(f"saliency_logits and image must have the same batch size; got "
                     f"saliency_logits shape {saliency.shape} and image shape {image.shape}.")
  if isinstance(grid_options.get("max_magnification"), str):
    if grid_options["max_magnification"] != "source":
      raise ValueError(f"max_magnification must be None, a number of at least 1 or 'source'; "
                       f"got {grid_options['max_magnification']!r}.")
    out_h, out_w = validation.check_shape(out_shape, "out_shape")
    ratio = (image.shape[1] * image.shape[2] / (out_h * out_w)) ** 0.5
    grid_options["max_magnification"] = max(1.0, ratio)
  if validation.check_bool(exact_identity, "exact_identity"):
    grid_options["align_corners"] = align_corners
  grid = attraction.attraction_grid(saliency, out_shape, **grid_options)
  sampled = sampling.grid_sample(image, grid, align_corners=align_corners,
                                 padding_mode=padding_mode, implementation=implementation,
                                 antialias=antialias)
  return sampled, grid, saliency
