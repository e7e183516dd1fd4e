"""The saliency network f_s: a truncated ResNet, ReLU, a 1x1 head, bilinear upsampling to the grid.

The paper's ablation truncates ImageNet-pretrained ResNet-18 after 6, 10 or 14 layers, i.e. after
`layer1`, `layer2` or `layer3` ("adding one block at a time"; the authors' code keeps ResNet-18's
children up to `layer3` for 14: 256 channels at stride 16). The head is a 1x1 convolution with
bias to one channel (PyTorch's default initialisation, as the authors' `nn.Conv2d`), and the map
is upsampled to the saliency grid (31x31) with the half-pixel bilinear convention. The output is
unnormalised: the sampler applies the softmax.

The grid estimator baseline reuses this network with two output channels (u, v offsets).
"""

import jax
from flax import nnx

from saliency_jax import ops
from saliency_jax.models import layers
from saliency_jax.models import resnet

BACKBONES = ("resnet18", "resnet_tiny")
# Truncation depth (layers of ResNet-18) -> number of ResNet stages kept.
DEPTHS = {6: 1, 10: 2, 14: 3}


def truncated_resnet(backbone: str | resnet.ResNetSpec, depth: int, *,
                     rngs: nnx.Rngs) -> resnet.ResNet:
  """ResNet `backbone` truncated after `depth` layers (6, 10 or 14), without classifier.

  `backbone` is one of `BACKBONES` or, for other widths, a `resnet.ResNetSpec`.
  """
  if isinstance(backbone, str):
    if backbone not in BACKBONES:
      raise ValueError(f"saliency backbone must be one of {BACKBONES}; got {backbone!r}.")
    backbone = resnet.SPECS[backbone]
  if depth not in DEPTHS:
    raise ValueError(f"saliency depth must be one of {tuple(DEPTHS)} (ResNet-18 layers: after "
                     f"layer1, layer2 or layer3); got {depth!r}.")
  return resnet.ResNet(backbone, num_classes=None, num_stages=DEPTHS[depth], rngs=rngs)


class SaliencyNetwork(nnx.Module):
  """Low-resolution image -> saliency logits on the grid.

  Args:
    backbone: "resnet18" (the paper), "resnet_tiny" (tests) or a `resnet.ResNetSpec`.
    depth: 6, 10 or 14 layers of the backbone.
    grid_size: side of the saliency grid the map is upsampled to (the authors: 31).
    out_channels: 1 for a saliency map; 2 for the grid estimator's (u, v).
    head_init, head_bias_init: initialisers of the head's kernel and bias (PyTorch's defaults
      unless given).
    rngs: `nnx.Rngs` with a "params" stream.

  Attributes:
    backbone: the truncated ResNet (its own learning rate in the authors' recipe).
    head: the 1x1 convolution.
  """

  def __init__(self, *, backbone: str | resnet.ResNetSpec = "resnet18", depth: int = 14,
               grid_size: int = 31,
               out_channels: int = 1,
               head_init: nnx.Initializer = layers.torch_default_kernel_init,
               head_bias_init: nnx.Initializer | None = None, rngs: nnx.Rngs):
    if grid_size < 2:
      raise ValueError(f"grid_size must be at least 2; got {grid_size}.")
    self.backbone = truncated_resnet(backbone, depth, rngs=rngs)
    channels = self.backbone.num_features
    if head_bias_init is None:
      head_bias_init = layers.torch_default_bias_init(channels)
    self.head = layers.conv(channels, out_channels, 1, use_bias=True, kernel_init=head_init,
                            bias_init=head_bias_init, rngs=rngs)
    self.grid_size = grid_size

  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x `[B, h, w, 3]` normalised low-res image. Returns `[B, g, g, out_channels]`."""
    features, _ = self.backbone(x)
    # The backbone already ends in a ReLU; the authors' extra one is kept as a no-op for fidelity.
    logits = self.head(nnx.relu(features))
    return ops.bilinear_resize(logits, (self.grid_size, self.grid_size))
