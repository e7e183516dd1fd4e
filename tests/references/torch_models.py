"""Plain-PyTorch ResNets and AlexNet with torchvision's exact architecture and state_dict keys.

torchvision is not a dependency of this project, yet the tests need torchvision-shaped checkpoints
(to test the weight conversion without downloading anything) and the benchmarks need the PyTorch
side of the comparison. These modules are written from the published architecture (He et al.
2016, torchvision's v1.5 variant with the stride on the bottleneck's 3x3 convolution; Krizhevsky
et al. 2012 as in torchvision) so that `state_dict()` has the same keys and shapes as
`torchvision.models.resnet18()` etc. The library never imports this file.

`forward_features(x)` returns the same named stages as `saliency_jax.models.resnet.ResNet`.
`SaliencySampler` is the authors' sampling layer in PyTorch (the reference of the model parity
test and the PyTorch side of a train-step benchmark); `truncated_resnet` builds its saliency
backbone.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

RESNET_SPECS = {
    "resnet18": ("basic", (2, 2, 2, 2), 64),
    "resnet34": ("basic", (3, 4, 6, 3), 64),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 64),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 64),
    "resnet_tiny": ("basic", (2, 2, 2, 2), 8),
}


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = None
    if stride != 1 or in_planes != planes:
      self.downsample = nn.Sequential(
          nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + identity)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, in_planes: int, planes: int, stride: int = 1):
    super().__init__()
    out_planes = planes * self.expansion
    self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out_planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = None
    if stride != 1 or in_planes != out_planes:
      self.downsample = nn.Sequential(
          nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


class ResNet(nn.Module):

  def __init__(self, block: str, layers, width: int = 64, num_classes: int = 1000):
    super().__init__()
    block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[block]
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    in_planes = width
    for stage, num_blocks in enumerate(layers):
      planes = width * 2**stage
      blocks = []
      for i in range(num_blocks):
        blocks.append(block_cls(in_planes, planes, 2 if stage > 0 and i == 0 else 1))
        in_planes = planes * block_cls.expansion
      setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(in_planes, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward_features(self, x):
    features = {}
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    features["stem"] = x
    for name in ("layer1", "layer2", "layer3", "layer4"):
      x = getattr(self, name)(x)
      features[name] = x
    features["pooled"] = torch.flatten(self.avgpool(x), 1)
    return self.fc(features["pooled"]), features

  def forward(self, x):
    return self.forward_features(x)[0]


def resnet(name: str, num_classes: int = 1000) -> ResNet:
  block, layers, width = RESNET_SPECS[name]
  return ResNet(block, layers, width, num_classes)


class AlexNet(nn.Module):
  """torchvision's AlexNet (the one-GPU variant of Krizhevsky et al. 2012)."""

  def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes))

  def forward(self, x):
    x = torch.flatten(self.avgpool(self.features(x)), 1)
    return self.classifier(x)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def truncated_resnet(model: ResNet, num_stages: int) -> nn.Sequential:
  """The stem and the first `num_stages` stages of `model` (shares its modules)."""
  stages = [getattr(model, f"layer{i + 1}") for i in range(num_stages)]
  return nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, *stages)


class SaliencySampler(nn.Module):
  """The saliency sampler as the authors' published PyTorch code computes it.

  Written from the published description, for parity tests and benchmarks: area-averaged
  low-resolution view, truncated ResNet + ReLU + 1x1 head, bilinear upsampling to the grid,
  softmax, border-replicating padding, three 'valid' correlations with an unnormalised Gaussian,
  `clamp(2u - 1)`, bilinear upsampling of the grid (half-pixel), `grid_sample`, task network.
  Images are NCHW floats in 0..1; the networks see ImageNet-normalised inputs.
  """

  def __init__(self, task_net: nn.Module, saliency_backbone: nn.Module, backbone_channels: int, *,
               task_size: int = 224, low_res_size: int = 224, grid_size: int = 31,
               padding: int = 30, fwhm: float = 13.0, temperature: float = 1.0,
               align_corners: bool = True):
    super().__init__()
    self.task_net = task_net
    self.saliency_backbone = saliency_backbone
    self.saliency_head = nn.Conv2d(backbone_channels, 1, 1)
    self.task_size, self.low_res_size = task_size, low_res_size
    self.grid_size, self.padding = grid_size, padding
    self.temperature, self.align_corners = temperature, align_corners
    offsets = torch.arange(-padding, padding + 1, dtype=torch.float64)
    kernel = torch.exp(-4 * math.log(2) * (offsets[:, None]**2 + offsets[None, :]**2) / fwhm**2)
    self.register_buffer("kernel", kernel.float()[None, None])
    coords = (torch.arange(grid_size + 2 * padding, dtype=torch.float32) - padding) / (
        grid_size - 1)
    self.register_buffer("basis_x", coords[None, None, None, :].expand(
        1, 1, grid_size + 2 * padding, -1).contiguous())
    self.register_buffer("basis_y", coords[None, None, :, None].expand(
        1, 1, -1, grid_size + 2 * padding).contiguous())
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None])
    self.register_buffer("std", torch.tensor(IMAGENET_STD)[None, :, None, None])

  def normalize(self, x):
    return (x - self.mean) / self.std

  def saliency_logits(self, x):
    """`[B, 3, H, W]` in 0..1 -> `[B, 1, g, g]` saliency logits on the grid."""
    view = F.adaptive_avg_pool2d(x, self.low_res_size)
    logits = self.saliency_head(F.relu(self.saliency_backbone(self.normalize(view))))
    return F.interpolate(logits, size=(self.grid_size, self.grid_size), mode="bilinear",
                         align_corners=False)

  def saliency(self, x):
    """`[B, 3, H, W]` in 0..1 -> `[B, g, g]` softmax saliency."""
    logits = self.saliency_logits(x)
    b = logits.shape[0]
    flat = F.softmax(logits.reshape(b, -1) / self.temperature, dim=-1)
    return flat.reshape(b, self.grid_size, self.grid_size)

  def grid(self, saliency):
    """`[B, g, g]` saliency -> `[B, T, T, 2]` sampling grid."""
    padded = F.pad(saliency[:, None], (self.padding,) * 4, mode="replicate")
    den = F.conv2d(padded, self.kernel)
    u = F.conv2d(padded * self.basis_x, self.kernel) / den
    v = F.conv2d(padded * self.basis_y, self.kernel) / den
    coarse = torch.cat([u, v], dim=1).mul(2).sub(1).clamp(-1, 1)
    fine = F.interpolate(coarse, size=(self.task_size, self.task_size), mode="bilinear",
                         align_corners=False)
    return fine.permute(0, 2, 3, 1)

  def forward(self, x):
    """`[B, 3, H, W]` in 0..1 -> (outputs, sampled, grid, saliency)."""
    saliency = self.saliency(x)
    grid = self.grid(saliency)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=self.align_corners)
    return self.task_net(self.normalize(sampled)), sampled, grid, saliency
