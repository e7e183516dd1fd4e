"""AlexNet (Krizhevsky et al. 2012) as torchvision builds it, in Flax NNX, NHWC.

The paper's gaze experiment uses it as the task network with a two-output final layer (and a
sigmoid, applied by the model wrappers). The layers are named `conv1` .. `conv5` and `fc6` ..
`fc8`; `saliency_jax.models.convert` maps them to torchvision's `features.*` / `classifier.*`
keys. The deformable baseline replaces the top three convolutions (`conv3` .. `conv5`) with
deformable ones.

Returns `(output, features)` with features "conv1" .. "conv5" (after ReLU and, for 1, 2 and 5, the
max-pool), "pooled" (the 6x6 adaptive average) and "fc7".
"""

import jax
from flax import nnx

from saliency_jax import ops
from saliency_jax.models import layers
from saliency_jax.models.deformable import DeformableConv

# (out channels, kernel, stride, padding, max-pool after) of torchvision's five convolutions.
_CONVS = ((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False),
          (256, 3, 1, 1, False), (256, 3, 1, 1, True))
POOLED_SIZE = 6


class AlexNet(nnx.Module):
  """torchvision's AlexNet.

  Args:
    num_classes: outputs of `fc8` (2 for the gaze experiment).
    dropout_rate: dropout before `fc6` and `fc7` in training mode (torchvision: 0.5).
    deformable_convs: how many of the top convolutions are deformable (0..5; the baseline: 3).
    rngs: `nnx.Rngs` with "params" and, when dropout_rate > 0, "dropout" streams.
  """

  def __init__(self, *, num_classes: int = 1000, dropout_rate: float = 0.5,
               deformable_convs: int = 0, rngs: nnx.Rngs):
    if not 0 <= deformable_convs <= len(_CONVS):
      raise ValueError(f"deformable_convs must be in 0..{len(_CONVS)}; got {deformable_convs}.")
    in_features = 3
    first_deformable = len(_CONVS) - deformable_convs
    self.pool_after = tuple(spec[4] for spec in _CONVS)
    for i, (features, kernel, stride, padding, _) in enumerate(_CONVS):
      conv_cls = DeformableConv if i >= first_deformable else layers.conv
      conv = conv_cls(
          in_features, features, kernel, stride=stride, padding=padding, use_bias=True,
          kernel_init=layers.torch_default_kernel_init,
          bias_init=layers.torch_default_bias_init(in_features * kernel**2), rngs=rngs)
      setattr(self, f"conv{i + 1}", conv)
      in_features = features
    self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
    self.fc6 = layers.torch_linear(in_features * POOLED_SIZE**2, 4096, rngs=rngs)
    self.fc7 = layers.torch_linear(4096, 4096, rngs=rngs)
    self.fc8 = layers.torch_linear(4096, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Args: x `[B, H, W, 3]` normalised, H and W >= 63. Returns `(logits [B, C], features)`."""
    features = {}
    for i, pool in enumerate(self.pool_after):
      x = nnx.relu(getattr(self, f"conv{i + 1}")(x))
      if pool:
        x = layers.max_pool(x, 3, stride=2)
      features[f"conv{i + 1}"] = x
    # torchvision's AdaptiveAvgPool2d((6, 6)); the identity for 224-227 pixel inputs.
    x = ops.area_resize(x, (POOLED_SIZE, POOLED_SIZE))
    features["pooled"] = x
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.fc6(self.dropout(x)))
    x = nnx.relu(self.fc7(self.dropout(x)))
    features["fc7"] = x
    return self.fc8(x), features
