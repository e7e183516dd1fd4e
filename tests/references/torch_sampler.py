"""A PyTorch port of the authors' saliency sampler, written from their published numerics.

Used only by the tests (as the independent reference) and the benchmarks (as the baseline);
`saliency_jax` never imports torch. Tensors are NCHW, as in PyTorch.

`reference_*` follow the authors' code literally: replication padding, a 2-D `(2p+1)^2` Gaussian
correlation of the map, of x times the map and of y times the map, the division, the clamp, the
bilinear upsampling of the grid (half-pixel convention) and `grid_sample` with the corner
convention (PyTorch 0.4's behaviour, `align_corners=True` today).
`tuned_*` compute the same numbers the way a careful PyTorch user would: the separable kernel as
two 1-D correlations with all three maps in one batched call, channels-last images.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def make_gaussian(size: int, fwhm: float) -> np.ndarray:
  """The authors' kernel: `exp(-4 ln2 r^2 / fwhm^2)`, centred at `size // 2`, peak 1."""
  x = np.arange(0, size, 1, float)
  y = x[:, np.newaxis]
  c = size // 2
  return np.exp(-4 * np.log(2) * ((x - c) ** 2 + (y - c) ** 2) / fwhm**2)


def _basis(gh: int, gw: int, padding: int, device, dtype) -> torch.Tensor:
  """`[2, gh + 2p, gw + 2p]`: x = (j - p) / (gw - 1) and y = (i - p) / (gh - 1)."""
  x = (torch.arange(gw + 2 * padding, device=device, dtype=dtype) - padding) / (gw - 1)
  y = (torch.arange(gh + 2 * padding, device=device, dtype=dtype) - padding) / (gh - 1)
  return torch.stack([x[None, :].expand(len(y), -1), y[:, None].expand(-1, len(x))])


def _finish(num_x, num_y, den, out_size):
  grid = torch.cat([num_x / den, num_y / den], dim=1) * 2 - 1
  grid = torch.clamp(grid, -1, 1)
  grid = F.interpolate(grid, size=out_size, mode="bilinear", align_corners=False)
  return grid.permute(0, 2, 3, 1)


def reference_grid(saliency: torch.Tensor, out_size, *, fwhm: float = 13.0,
                   padding: int = 30) -> torch.Tensor:
  """`saliency [B, 1, gh, gw]` -> grid `[B, h, w, 2]`, literally as the authors compute it."""
  b, _, gh, gw = saliency.shape
  kernel = torch.tensor(make_gaussian(2 * padding + 1, fwhm), dtype=saliency.dtype,
                        device=saliency.device)[None, None]
  padded = F.pad(saliency, (padding,) * 4, mode="replicate")
  basis = _basis(gh, gw, padding, saliency.device, saliency.dtype)
  weighted = (basis[None] * padded).reshape(b * 2, 1, *padded.shape[2:])
  den = F.conv2d(padded, kernel)
  nums = F.conv2d(weighted, kernel).reshape(b, 2, gh, gw)
  return _finish(nums[:, :1], nums[:, 1:], den, out_size)


def reference_saliency_sample(image: torch.Tensor, logits: torch.Tensor, out_size, *,
                              fwhm: float = 13.0, padding: int = 30,
                              align_corners: bool = True):
  """`image [B, C, H, W]` float, `logits [B, 1, gh, gw]` -> (sampled, grid, saliency)."""
  b, _, gh, gw = logits.shape
  saliency = F.softmax(logits.reshape(b, gh * gw), dim=1).reshape(b, 1, gh, gw)
  grid = reference_grid(saliency, out_size, fwhm=fwhm, padding=padding)
  sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=align_corners)
  return sampled, grid, saliency


class TunedSampler:
  """The same layer with the separable kernel (two 1-D passes, one batched call for all maps).

  Keeps its constants on the device, built once per shape, so the benchmark times only the work.
  """

  def __init__(self, grid_shape, out_size, *, fwhm=13.0, padding=30, device="cpu",
               dtype=torch.float32):
    gh, gw = grid_shape
    g = torch.tensor(make_gaussian(2 * padding + 1, fwhm)[padding], dtype=dtype, device=device)
    self.row_kernel = g.reshape(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous()
    self.col_kernel = g.reshape(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous()
    self.basis = _basis(gh, gw, padding, device, dtype)
    self.padding = padding
    self.out_size = out_size

  def grid(self, saliency: torch.Tensor) -> torch.Tensor:
    padded = F.pad(saliency, (self.padding,) * 4, mode="replicate")
    maps = torch.cat([padded, self.basis[None] * padded], dim=1)  # S, xS, yS as 3 channels.
    maps = F.conv2d(F.conv2d(maps, self.row_kernel, groups=3), self.col_kernel, groups=3)
    return _finish(maps[:, 1:2], maps[:, 2:3], maps[:, :1], self.out_size)

  def __call__(self, image: torch.Tensor, logits: torch.Tensor, *, align_corners=True):
    b, _, gh, gw = logits.shape
    saliency = F.softmax(logits.reshape(b, gh * gw), dim=1).reshape(b, 1, gh, gw)
    grid = self.grid(saliency)
    sampled = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=align_corners)
    return sampled, grid, saliency


def fwhm_to_sigma(fwhm: float) -> float:
  return fwhm / (2 * math.sqrt(2 * math.log(2)))
