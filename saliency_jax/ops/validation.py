"""Argument checks shared by the ops: clear `ValueError`s that name the argument.

Shapes and dtypes are checked always (they are static). Values (NaN, negative weights) can only be
checked when the array is concrete, i.e. when an op is called outside `jax.jit`; under `jit` the
documented propagation rules of each op apply instead.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_shape(shape: Sequence[int], name: str) -> tuple[int, int]:
  """Returns `shape` as a pair of positive Python ints or raises `ValueError`."""
  try:
    h, w = (int(s) for s in shape)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a pair (height, width) of ints; got {shape!r}.") from None
  if h <= 0 or w <= 0:
    raise ValueError(f"{name} must be positive; got {shape!r}.")
  return h, w


def check_image(image: jax.Array, name: str) -> jax.Array:
  """Checks a `[B, H, W, C]` image with non-empty spatial dims and a real dtype."""
  image = jnp.asarray(image) if not isinstance(image, (jax.Array, np.ndarray)) else image
  if image.ndim != 4:
    raise ValueError(
        f"{name} must have shape [batch, height, width, channels]; got shape {image.shape}.")
  if min(image.shape[1:]) == 0:
    raise ValueError(f"{name} must have non-empty height, width and channels; got shape "
                     f"{image.shape}.")
  if not (jnp.issubdtype(image.dtype, jnp.floating) or jnp.issubdtype(image.dtype, jnp.integer)):
    raise ValueError(f"{name} must be floating or integer; got dtype {image.dtype}.")
  return image


def concrete_value(x: jax.Array) -> np.ndarray | None:
  """The value of `x` as NumPy when it is concrete (not traced), else None."""
  if isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def check_finite(x: jax.Array, name: str) -> None:
  """Raises if a concrete `x` holds NaN or infinity."""
  value = concrete_value(x)
  if value is not None and not np.all(np.isfinite(value)):
    bad = np.argwhere(~np.isfinite(value))[0]
    raise ValueError(f"{name} must be finite; found {value[tuple(bad)]} at index {tuple(bad)}.")
