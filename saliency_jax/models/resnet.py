"""ResNet-18/34/50/101 (He et al. 2016) in Flax NNX, NHWC, architecturally equal to torchvision's.

Same layers, shapes, padding and initialisation as `torchvision.models.resnet*` (v1.5: in a
bottleneck block the stride sits on the 3x3 convolution), so torchvision checkpoints convert one
to one (`saliency_jax.models.convert`) and parameter counts match. Attribute names follow
torchvision's state_dict keys (`conv1`, `bn1`, `layer1[0].conv2`, `fc`; only the shortcut's
`downsample.conv` / `downsample.bn` are torchvision's `downsample.0` / `downsample.1`).
BatchNorm has PyTorch's epsilon (1e-5) and momentum (0.1 in PyTorch's convention, 0.9 in flax's);
`model.train()` / `model.eval()` switch between batch and running statistics. One difference
remains by design of flax: the running variance averages the biased batch variance, PyTorch's the
unbiased one (a factor n / (n - 1) on each update).

A network returns `(output, features)`. `features` maps each stage's name, in order, to its
activation: "stem" (after the max-pool, stride 4), "layer1" .. "layer4" (strides 4, 8, 16, 32) and
"pooled" (`[B, C]`, the global average). A network built with `num_stages < 4` stops after that
stage (nothing deeper is built) and one built with `num_classes=None` has no `fc`; `output` is then
the last activation computed. This is how the saliency network truncates ResNet-18.
"""

import dataclasses

import jax
from flax import nnx

from saliency_jax.models import layers
from saliency_jax.models.deformable import DeformableConv

STAGES = ("layer1", "layer2", "layer3", "layer4")


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
  """Blocks per stage, block type and the first stage's width (channels before expansion)."""
  block: str
  stage_sizes: tuple[int, ...]
  width: int = 64


SPECS = {
    "resnet18": ResNetSpec("basic", (2, 2, 2, 2)),
    "resnet34": ResNetSpec("basic", (3, 4, 6, 3)),
    "resnet50": ResNetSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": ResNetSpec("bottleneck", (3, 4, 23, 3)),
    # ResNet-18's topology with 8 times fewer channels, for fast tests.
    "resnet_tiny": ResNetSpec("basic", (2, 2, 2, 2), width=8),
}


def _conv3x3(in_features, out_features, *, stride, deformable, rngs):
  if deformable:
    return DeformableConv(in_features, out_features, 3, stride=stride, padding=1, rngs=rngs)
  return layers.conv(in_features, out_features, 3, stride=stride, padding=1, rngs=rngs)


class Downsample(nnx.Module):
  """The projection shortcut: 1x1 strided convolution and BatchNorm (torchvision's downsample)."""

  def __init__(self, in_features: int, out_features: int, *, stride: int, rngs: nnx.Rngs):
    self.conv = layers.conv(in_features, out_features, 1, stride=stride, rngs=rngs)
    self.bn = layers.batch_norm(out_features, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""
  expansion = 1
  num_3x3 = 2

  def __init__(self, in_features: int, features: int, *, stride: int = 1,
               deformable: tuple[bool, ...] = (False, False), rngs: nnx.Rngs):
    self.conv1 = _conv3x3(in_features, features, stride=stride, deformable=deformable[0],
                          rngs=rngs)
    self.bn1 = layers.batch_norm(features, rngs=rngs)
    self.conv2 = _conv3x3(features, features, stride=1, deformable=deformable[1], rngs=rngs)
    self.bn2 = layers.batch_norm(features, rngs=rngs)
    needs_projection = stride != 1 or in_features != features
    self.downsample = (Downsample(in_features, features, stride=stride, rngs=rngs)
                       if needs_projection else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + shortcut)


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection (ResNet-50/101)."""
  expansion = 4
  num_3x3 = 1

  def __init__(self, in_features: int, features: int, *, stride: int = 1,
               deformable: tuple[bool, ...] = (False,), rngs: nnx.Rngs):
    out_features = features * self.expansion
    self.conv1 = layers.conv(in_features, features, 1, rngs=rngs)
    self.bn1 = layers.batch_norm(features, rngs=rngs)
    self.conv2 = _conv3x3(features, features, stride=stride, deformable=deformable[0], rngs=rngs)
    self.bn2 = layers.batch_norm(features, rngs=rngs)
    self.conv3 = layers.conv(features, out_features, 1, rngs=rngs)
    self.bn3 = layers.batch_norm(out_features, rngs=rngs)
    needs_projection = stride != 1 or in_features != out_features
    self.downsample = (Downsample(in_features, out_features, stride=stride, rngs=rngs)
                       if needs_projection else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return nnx.relu(y + shortcut)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nnx.Module):
  """A ResNet; see the module docstring for its outputs and truncation.

  Args:
    spec: the architecture, e.g. `SPECS["resnet50"]`.
    num_classes: size of the final `fc`; None builds no classifier (a backbone).
    num_stages: how many of the spec's stages to build (all by default); fewer implies no `fc`.
    deformable_convs: how many of the last 3x3 convolutions are deformable (DCN v1), counted back
      from the end of the network; 3 gives the deformable baseline.
    rngs: `nnx.Rngs` with a "params" stream.
  """

  def __init__(self, spec: ResNetSpec, *, num_classes: int | None = 1000,
               num_stages: int | None = None, deformable_convs: int = 0, rngs: nnx.Rngs):
    if spec.block not in BLOCKS:
      raise ValueError(f"spec.block must be one of {sorted(BLOCKS)}; got {spec.block!r}.")
    if num_stages is None:
      num_stages = len(spec.stage_sizes)
    if not 1 <= num_stages <= len(spec.stage_sizes) or len(spec.stage_sizes) > len(STAGES):
      raise ValueError(f"num_stages must be in 1..{len(spec.stage_sizes)} (at most "
                       f"{len(STAGES)}); got {num_stages}.")
    if num_stages < len(spec.stage_sizes) and num_classes is not None:
      raise ValueError(f"a ResNet truncated to {num_stages} stages has no classifier; pass "
                       f"num_classes=None (got num_classes={num_classes}).")
    block_cls = BLOCKS[spec.block]
    total_3x3 = sum(spec.stage_sizes) * block_cls.num_3x3
    if not 0 <= deformable_convs <= total_3x3:
      raise ValueError(f"deformable_convs must be in 0..{total_3x3} for this network; got "
                       f"{deformable_convs}.")
    self.stage_names = STAGES[:num_stages]
    width = spec.width
    self.conv1 = layers.conv(3, width, 7, stride=2, padding=3, rngs=rngs)
    self.bn1 = layers.batch_norm(width, rngs=rngs)

    # Channels of each stage's activation, for heads that read several stages.
    self.stage_channels: dict[str, int] = {"stem": width}
    conv_index = 0  # Index of the next 3x3 convolution, counted over the whole network.
    in_features = width
    for stage, num_blocks in enumerate(spec.stage_sizes[:num_stages]):
      features = width * 2**stage
      blocks = []
      for i in range(num_blocks):
        deformable = tuple(conv_index + k >= total_3x3 - deformable_convs
                           for k in range(block_cls.num_3x3))
        conv_index += block_cls.num_3x3
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(block_cls(in_features, features, stride=stride, deformable=deformable,
                                rngs=rngs))
        in_features = features * block_cls.expansion
      setattr(self, STAGES[stage], nnx.List(blocks))
      self.stage_channels[STAGES[stage]] = in_features
    self.num_features = in_features
    self.fc = (layers.torch_linear(in_features, num_classes, rngs=rngs)
               if num_classes is not None else None)

  @property
  def spatial_output(self) -> str:
    """The name of the last spatial feature map (the class activation map's input)."""
    return self.stage_names[-1]

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Args: x `[B, H, W, 3]` normalised image. Returns `(output, features)`, see module doc."""
    features = {}
    x = nnx.relu(self.bn1(self.conv1(x)))
    x = layers.max_pool(x, 3, stride=2, padding=1)
    features["stem"] = x
    for name in self.stage_names:
      for block in getattr(self, name):
        x = block(x)
      features[name] = x
    if self.fc is None:
      return x, features
    pooled = layers.global_avg_pool(x)
    features["pooled"] = pooled
    return self.fc(pooled), features


def build_resnet(name: str, *, num_classes: int | None = 1000, num_stages: int | None = None,
           deformable_convs: int = 0, rngs: nnx.Rngs) -> ResNet:
  """Builds the ResNet called `name` (one of `SPECS`); other arguments as `ResNet`."""
  if name not in SPECS:
    raise ValueError(f"unknown ResNet {name!r}; expected one of {sorted(SPECS)}.")
  return ResNet(SPECS[name], num_classes=num_classes, num_stages=num_stages,
                deformable_convs=deformable_convs, rngs=rngs)
