"""The blur warm-up of the authors' training recipe, with a random blur size per example.

For the first epochs the sampled image is blurred before the task network sees it, which pushes
the sampler to zoom harder: the image is average-pooled to `s x s` (adaptive average pooling,
`torch.nn.functional.adaptive_avg_pool2d`) and bilinearly upsampled back (half-pixel convention,
`F.interpolate(mode="bilinear", align_corners=False)`), with `s` drawn uniformly from
`[min_size, size]` (both ends included). The authors draw one `s` per batch; here every example
gets its own, which the reference notes is better.

A size that differs per example cannot be a static shape, so both resizes are written as `[L, L]`
matrices built from the traced size: pooling to `s` is the first `s` rows of an `[L, L]` averaging
matrix (the rest zero) and upsampling from `s` reads only the first `s` columns of an `[L, L]`
interpolation matrix. Their product blurs one axis; the image is blurred as `M x M^T` per channel.
"""

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST
# The authors blur 224-pixel task inputs down to sizes 64..224.
REFERENCE_SIZE = 224
REFERENCE_MIN_SIZE = 64


def scaled_min_size(size: int, min_size_at_reference: int = REFERENCE_MIN_SIZE) -> int:
  """The smallest blur size for `size`-pixel images: `min_size_at_reference` (given at 224
  pixels) scaled proportionally, within `[1, size]`."""
  return max(1, min(size, round(min_size_at_reference * size / REFERENCE_SIZE)))


def _area_matrix(size: jax.Array, length: int) -> jax.Array:
  """`[L, L]`: rows `< size` average the adaptive-pooling windows of `L -> size`, others zero."""
  out = jnp.arange(length)[:, None]
  src = jnp.arange(length)[None, :]
  start = (out * length) // size
  end = -((-(out + 1) * length) // size)  # Ceiling division.
  inside = (src >= start) & (src < end) & (out < size)
  return jnp.where(inside, 1.0 / jnp.maximum(end - start, 1), 0.0)


def _bilinear_matrix(size: jax.Array, length: int) -> jax.Array:
  """`[L, L]`: interpolation from the first `size` entries to `L`, half-pixel convention."""
  out = jnp.arange(length, dtype=jnp.float32)[:, None]
  src = jnp.arange(length)[None, :]
  position = jnp.maximum((out + 0.5) * (size / length) - 0.5, 0.0)
  low = jnp.minimum(jnp.floor(position).astype(jnp.int32), size - 1)
  high = jnp.minimum(low + 1, size - 1)
  frac = position - low
  return jnp.where(src == low, 1.0 - frac, 0.0) + jnp.where(src == high, frac, 0.0)


def blur_matrix(size: jax.Array, length: int) -> jax.Array:
  """`[L, L]` matrix of pooling `L -> size` then upsampling back to `L`, along one axis."""
  return jnp.matmul(_bilinear_matrix(size, length), _area_matrix(size, length),
                    precision=_HIGHEST)


def blur(images: jax.Array, sizes: jax.Array) -> jax.Array:
  """Blurs each image by pooling it to `sizes[b] x sizes[b]` and upsampling back.

  Args:
    images: `[B, L, L, C]` floating, square.
    sizes: `[B]` integers in `[1, L]`.

  Returns:
    `[B, L, L, C]`, the same dtype as `images`.
  """
  if images.ndim != 4 or images.shape[1] != images.shape[2]:
    raise ValueError(f"images must be square, [batch, size, size, channels]; got shape "
                     f"{images.shape}.")
  if sizes.shape != images.shape[:1]:
    raise ValueError(f"sizes must have shape [batch] = {images.shape[:1]}; got {sizes.shape}.")
  length = images.shape[1]
  matrices = jax.vmap(blur_matrix, in_axes=(0, None))(sizes, length)
  out = jnp.einsum("bhH,bHWc,bwW->bhwc", matrices, images.astype(jnp.float32), matrices,
                   precision=_HIGHEST)
  return out.astype(images.dtype)


def random_blur(images: jax.Array, key: jax.Array, *, min_size: int) -> jax.Array:
  """The blur warm-up: `blur` with a size drawn per example from `[min_size, L]`.

  Args:
    images: `[B, L, L, C]` floating, square.
    key: a PRNG key; the same key gives the same blur.
    min_size: smallest blur size (the authors: 64 for L = 224), in `[1, L]`.

  Returns:
    `[B, L, L, C]` blurred images.
  """
  length = images.shape[1]
  if not 1 <= min_size <= length:
    raise ValueError(f"min_size must be in [1, {length}] (the image size); got {min_size}.")
  sizes = jax.random.randint(key, images.shape[:1], min_size, length + 1)
  return blur(images, sizes)
