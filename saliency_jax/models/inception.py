"""Inception-v3 (Szegedy et al. 2016) as torchvision builds it, in Flax NNX, NHWC.

The paper's second task network for iNaturalist, at 299x299 input. Module names follow
torchvision's (`Conv2d_1a_3x3`, `Mixed_5b`, ..., `fc`; each convolution is a `BasicConv` with
`conv` and `bn`), so the parameter count equals torchvision's `inception_v3()` (27,161,264 with
the auxiliary classifier, 23,834,568 without). BatchNorm uses torchvision's epsilon 1e-3.

Returns `(logits, features)`; features hold the named stages "Conv2d_4a_3x3" (stride 8),
"Mixed_5d" (stride 8), "Mixed_6e" (stride 16), "Mixed_7c" (stride 32, 2048 channels) and "pooled",
plus "aux_logits" when the auxiliary classifier is built. Inputs must be at least 75x75.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax.models import layers

_EPSILON = 1e-3
# torchvision initialises every convolution and linear layer with a normal of std 0.1 (its
# truncation at +-2 is 20 standard deviations away), except in the auxiliary classifier.
_INIT = nnx.initializers.normal(0.1)


class BasicConv(nnx.Module):
  """Convolution without bias, BatchNorm (epsilon 1e-3), ReLU."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int | Sequence[int], *,
               stride: int = 1, padding: int | Sequence[int] = 0,
               kernel_init: nnx.Initializer = _INIT, rngs: nnx.Rngs):
    self.conv = layers.conv(in_features, out_features, kernel_size, stride=stride,
                            padding=padding, kernel_init=kernel_init, rngs=rngs)
    self.bn = layers.batch_norm(out_features, epsilon=_EPSILON, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


def _same_avg_pool(x: jax.Array) -> jax.Array:
  return layers.avg_pool(x, 3, stride=1, padding=1)


class InceptionA(nnx.Module):

  def __init__(self, in_features: int, pool_features: int, *, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv(in_features, 64, 1, rngs=rngs)
    self.branch5x5_1 = BasicConv(in_features, 48, 1, rngs=rngs)
    self.branch5x5_2 = BasicConv(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv(in_features, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = BasicConv(in_features, pool_features, 1, rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(_same_avg_pool(x)),
    ], axis=-1)


class InceptionB(nnx.Module):

  def __init__(self, in_features: int, *, rngs: nnx.Rngs):
    self.branch3x3 = BasicConv(in_features, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = BasicConv(in_features, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch3x3(x),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        layers.max_pool(x, 3, stride=2),
    ], axis=-1)


class InceptionC(nnx.Module):

  def __init__(self, in_features: int, channels_7x7: int, *, rngs: nnx.Rngs):
    c7 = channels_7x7
    self.branch1x1 = BasicConv(in_features, 192, 1, rngs=rngs)
    self.branch7x7_1 = BasicConv(in_features, c7, 1, rngs=rngs)
    self.branch7x7_2 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7_3 = BasicConv(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_1 = BasicConv(in_features, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_3 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7dbl_4 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7dbl_5 = BasicConv(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch_pool = BasicConv(in_features, 192, 1, rngs=rngs)

  def __call__(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    b7dbl = x
    for i in range(1, 6):
      b7dbl = getattr(self, f"branch7x7dbl_{i}")(b7dbl)
    return jnp.concatenate(
        [self.branch1x1(x), b7, b7dbl, self.branch_pool(_same_avg_pool(x))], axis=-1)


class InceptionD(nnx.Module):

  def __init__(self, in_features: int, *, rngs: nnx.Rngs):
    self.branch3x3_1 = BasicConv(in_features, 192, 1, rngs=rngs)
    self.branch3x3_2 = BasicConv(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = BasicConv(in_features, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b7 = x
    for i in range(1, 5):
      b7 = getattr(self, f"branch7x7x3_{i}")(b7)
    return jnp.concatenate(
        [self.branch3x3_2(self.branch3x3_1(x)), b7, layers.max_pool(x, 3, stride=2)], axis=-1)


class InceptionE(nnx.Module):

  def __init__(self, in_features: int, *, rngs: nnx.Rngs):
    self.branch1x1 = BasicConv(in_features, 320, 1, rngs=rngs)
    self.branch3x3_1 = BasicConv(in_features, 384, 1, rngs=rngs)
    self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = BasicConv(in_features, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch_pool = BasicConv(in_features, 192, 1, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl),
        self.branch_pool(_same_avg_pool(x)),
    ], axis=-1)


class InceptionAux(nnx.Module):
  """The auxiliary classifier on Mixed_6e (a training-time regulariser)."""

  def __init__(self, in_features: int, num_classes: int, *, rngs: nnx.Rngs):
    self.conv0 = BasicConv(in_features, 128, 1, rngs=rngs)
    self.conv1 = BasicConv(128, 768, 5, kernel_init=nnx.initializers.normal(0.01), rngs=rngs)
    self.fc = nnx.Linear(768, num_classes, kernel_init=nnx.initializers.normal(0.001),
                         bias_init=layers.torch_default_bias_init(768), rngs=rngs)

  def __call__(self, x):
    x = self.conv1(self.conv0(layers.avg_pool(x, 5, stride=3)))
    return self.fc(layers.global_avg_pool(x))


class InceptionV3(nnx.Module):
  """torchvision's Inception-v3.

  Args:
    num_classes: outputs of `fc`.
    aux_logits: build the auxiliary classifier (its logits go to `features["aux_logits"]`).
    dropout_rate: dropout before `fc` in training mode (torchvision: 0.5).
    rngs: `nnx.Rngs` with "params" and, when dropout_rate > 0, "dropout" streams.
  """

  def __init__(self, *, num_classes: int = 1000, aux_logits: bool = False,
               dropout_rate: float = 0.5, rngs: nnx.Rngs):
    self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = BasicConv(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = BasicConv(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = BasicConv(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.AuxLogits = InceptionAux(768, num_classes, rngs=rngs) if aux_logits else None
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, rngs=rngs)
    self.Mixed_7c = InceptionE(2048, rngs=rngs)
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc = nnx.Linear(2048, num_classes, kernel_init=_INIT,
                         bias_init=layers.torch_default_bias_init(2048), rngs=rngs)

  # The last spatial feature map (the class activation map's input).
  spatial_output = "Mixed_7c"

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Args: x `[B, H, W, 3]` normalised, H, W >= 75. Returns `(logits [B, C], features)`."""
    if min(x.shape[1:3]) < 75:
      raise ValueError(f"Inception-v3 needs inputs of at least 75x75 pixels; got shape "
                       f"{x.shape}.")
    features = {}
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = layers.max_pool(x, 3, stride=2)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = layers.max_pool(x, 3, stride=2)
    features["Conv2d_4a_3x3"] = x
    x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
    features["Mixed_5d"] = x
    x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
    features["Mixed_6e"] = x
    if self.AuxLogits is not None:
      features["aux_logits"] = self.AuxLogits(x)
    x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
    features["Mixed_7c"] = x
    pooled = layers.global_avg_pool(x)
    features["pooled"] = pooled
    return self.fc(self.dropout(pooled)), features
