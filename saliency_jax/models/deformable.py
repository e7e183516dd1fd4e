"""Deformable convolution (DCN v1, Dai et al. 2017) on top of the project's `grid_sample`.

Every output position of a `kh x kw` convolution reads its `kh * kw` taps at the regular positions
of an ordinary convolution plus a learned offset per tap, `(dy, dx)` in input pixels, predicted by
a plain convolution over the same input (same kernel size, stride and padding). The offsets are
fractional, so the taps are read by bilinear interpolation with zero padding outside the image,
exactly the zero padding of the plain convolution. The offset convolution starts at zero, so a
freshly built layer is the plain convolution with the same kernel; pretrained kernels can be
loaded into `kernel` unchanged.

Offset channel layout, as in the DCN papers and `torchvision.ops.deform_conv2d`: tap `k = i * kw +
j` (row-major over the kernel window) owns channels `2k` (dy, rows) and `2k + 1` (dx, columns).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax import ops
from saliency_jax.models import layers


class DeformableConv(nnx.Module):
  """A `kh x kw` deformable convolution, NHWC, with explicit symmetric padding like PyTorch's.

  Attributes:
    kernel: `[kh, kw, in_features, out_features]`, the layout of `nnx.Conv.kernel`.
    bias: `[out_features]` or None.
    offset: the `nnx.Conv` predicting `2 kh kw` offsets per output position (zero-initialised).
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      rngs: nnx.Rngs,
      stride: int | Sequence[int] = 1,
      padding: int | Sequence[int] = 0,
      use_bias: bool = False,
      kernel_init: nnx.Initializer = layers.he_normal_fan_out,
      bias_init: nnx.Initializer = layers.zeros,
  ):
    self.kernel_size = layers.pair(kernel_size)
    self.stride = layers.pair(stride)
    self.padding = layers.pair(padding)
    kh, kw = self.kernel_size
    self.kernel = nnx.Param(kernel_init(rngs.params(), (kh, kw, in_features, out_features)))
    self.bias = nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None
    self.offset = layers.conv(
        in_features, 2 * kh * kw, self.kernel_size, stride=self.stride, padding=self.padding,
        use_bias=True, kernel_init=layers.zeros, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x `[B, H, W, in_features]`. Returns `[B, Ho, Wo, out_features]`."""
    batch, height, width, channels = x.shape
    kh, kw = self.kernel_size
    taps = kh * kw
    offsets = self.offset(x)
    _, out_h, out_w, _ = offsets.shape
    offsets = offsets.reshape(batch, out_h, out_w, taps, 2)

    # Regular tap positions of a plain convolution, in input pixels (may lie in the padding).
    rows = jnp.arange(out_h) * self.stride[0] - self.padding[0]
    cols = jnp.arange(out_w) * self.stride[1] - self.padding[1]
    tap_rows = jnp.repeat(jnp.arange(kh), kw)
    tap_cols = jnp.tile(jnp.arange(kw), kh)
    tap_y = rows[:, None, None] + tap_rows[None, None, :] + offsets[..., 0]
    tap_x = cols[None, :, None] + tap_cols[None, None, :] + offsets[..., 1]

    # Pixel centres in grid_sample's align_corners=False coordinates, where out-of-image taps
    # read zeros: the plain convolution's zero padding.
    grid = jnp.stack([(2.0 * tap_x + 1.0) / width - 1.0, (2.0 * tap_y + 1.0) / height - 1.0],
                     axis=-1)
    grid = grid.reshape(batch, out_h, out_w * taps, 2)
    sampled = ops.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    sampled = sampled.reshape(batch, out_h, out_w, taps * channels)
    kernel = self.kernel[...].reshape(taps * channels, -1)
    out = sampled @ kernel
    if self.bias is not None:
      out = out + self.bias[...]
    return out
