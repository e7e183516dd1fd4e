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
    h, w = shape
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a pair (height, width) of ints; got {shape!r}.") from None
  if not (_is_int(h) and _is_int(w)):
    raise ValueError(f"{name} must be a pair (height, width) of ints; got {shape!r}.")
  if h <= 0 or w <= 0:
    raise ValueError(f"{name} must be positive; got {shape!r}.")
  return int(h), int(w)


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, *, minimum: int) -> int:
  """Returns `value` as a Python int `>= minimum` or raises `ValueError` (bools are refused)."""
  if not _is_int(value) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}.")
  return int(value)


def check_bool(value, name: str) -> bool:
  """Returns `value` as a Python bool or raises `ValueError` (no truthiness of strings)."""
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be True or False; got {value!r}.")
  return bool(value)


def check_positive_number(value, name: str) -> float:
  """Returns a real, finite, positive Python scalar as float or raises `ValueError`."""
  if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number))
      or not np.isfinite(value) or value <= 0):
    raise ValueError(f"{name} must be a positive finite number; got {value!r}.")
  return float(value)


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


def check_grid(grid: jax.Array, name: str = "grid", *, min_nodes: int = 1,
               finite: bool = False) -> jax.Array:
  """Checks a `[B, h, w, 2]` floating grid of (x, y) normalised positions with `h, w >=
  min_nodes`; with `finite`, also its values when concrete."""
  if not hasattr(grid, "ndim"):
    grid = jnp.asarray(grid)
  if grid.ndim != 4 or grid.shape[-1] != 2:
    raise ValueError(f"{name} must have shape [batch, height, width, 2]; got shape {grid.shape}.")
  if grid.shape[1] < min_nodes or grid.shape[2] < min_nodes:
    raise ValueError(f"{name} needs at least {min_nodes}x{min_nodes} nodes; got shape "
                     f"{grid.shape}.")
  if not jnp.issubdtype(grid.dtype, jnp.floating):
    raise ValueError(f"{name} must be floating (normalised coordinates in [-1, 1]); got dtype "
                     f"{grid.dtype}.")
  if finite:
    check_finite(grid, name)
  return grid


def concrete_value(x: jax.Array) -> np.ndarray | None:
  """The value of `x` as NumPy when it is concrete (not traced), else None."""
  if isinstance(x, jax.core.Tracer):
    return None
  return np.asarray(x)


def check_finite(x: jax.Array, name: str) -> None:
  """Raises if a concrete `x` holds NaN or infinity."""
  value = concrete_value(x)
  if value is not None and not np.all(np.isfinite(value)):
    bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
    raise ValueError(f"{name} must be finite; found {value[bad]} at index {bad}.")
