"""Layer constructors shared by the backbones, with torchvision's initialisation and numerics.

The backbones are meant to load torchvision checkpoints and to train like their PyTorch
counterparts, so their building blocks copy torchvision's choices: convolutions padded explicitly
(never 'SAME', whose split of odd padding differs from PyTorch for strided layers), He-normal
(fan-out) convolution kernels, PyTorch's default `nn.Linear` initialisation, and BatchNorm with
PyTorch's epsilon and momentum.
"""

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp
from flax import nnx

# torch.nn.BatchNorm2d's running averages move by 0.1 of the batch statistic per step; flax's
# `momentum` is the weight kept on the old value.
TORCH_BATCH_NORM_MOMENTUM = 0.9
TORCH_BATCH_NORM_EPSILON = 1e-5

# torchvision's ResNet: kaiming_normal_(mode="fan_out", nonlinearity="relu"), untruncated.
he_normal_fan_out = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default for nn.Conv2d and nn.Linear weights: kaiming_uniform_(a=sqrt(5)), a uniform
# of variance 1 / (3 fan_in).
torch_default_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
zeros = nnx.initializers.zeros_init()


def pair(value: int | Sequence[int]) -> tuple[int, int]:
  """`n -> (n, n)`; a pair (rows, columns) stays a pair, as PyTorch's size arguments."""
  if isinstance(value, int):
    return value, value
  first, second = value
  return int(first), int(second)


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int | Sequence[int],
    *,
    rngs: nnx.Rngs,
    stride: int = 1,
    padding: int | Sequence[int] = 0,
    use_bias: bool = False,
    kernel_init: nnx.Initializer = he_normal_fan_out,
    bias_init: nnx.Initializer = zeros,
) -> nnx.Conv:
  """A 2-D convolution padded like `torch.nn.Conv2d(padding=...)`: symmetric, explicit.

  `padding` is one int for both axes or `(rows, columns)`, as in PyTorch.
  """
  pad_rows, pad_cols = pair(padding)
  return nnx.Conv(
      in_features, out_features, pair(kernel_size), pair(stride),
      padding=((pad_rows, pad_rows), (pad_cols, pad_cols)), use_bias=use_bias,
      kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)


def batch_norm(
    features: int, *, rngs: nnx.Rngs, epsilon: float = TORCH_BATCH_NORM_EPSILON
) -> nnx.BatchNorm:
  """BatchNorm over the channels (last axis) with PyTorch's momentum and, by default, epsilon."""
  return nnx.BatchNorm(features, momentum=TORCH_BATCH_NORM_MOMENTUM, epsilon=epsilon, rngs=rngs)


def torch_default_bias_init(fan_in: int) -> nnx.Initializer:
  """PyTorch's default bias of `nn.Linear` / `nn.Conv2d`: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
  """`nnx.Linear` initialised as `torch.nn.Linear`: weight and bias U(-1/sqrt(in), 1/sqrt(in))."""
  return nnx.Linear(
      in_features, out_features,
      kernel_init=torch_default_kernel_init,
      bias_init=torch_default_bias_init(in_features), rngs=rngs)


def max_pool(x: jax.Array, size: int, *, stride: int, padding: int = 0) -> jax.Array:
  """`torch.nn.MaxPool2d(size, stride, padding)` on NHWC (padding never wins the max)."""
  return nnx.max_pool(x, (size, size), (stride, stride),
                      padding=((padding, padding), (padding, padding)))


def avg_pool(x: jax.Array, size: int, *, stride: int, padding: int = 0) -> jax.Array:
  """`torch.nn.functional.avg_pool2d(size, stride, padding)`, padding counted (its default)."""
  return nnx.avg_pool(x, (size, size), (stride, stride),
                      padding=((padding, padding), (padding, padding)), count_include_pad=True)


def global_avg_pool(x: jax.Array) -> jax.Array:
  """`[B, H, W, C] -> [B, C]`, the mean over the spatial axes."""
  return jnp.mean(x, axis=(1, 2))
