"""A PyTorch reference of the piecewise-bilinear inverse, written from the maths, brute force.

For every target and every cell of the grid it solves the cell's bilinear patch
`P(s, t) = A + s e + t f + s t g = p` exactly (float64): eliminating `t` with the cross product
against `f + s g` gives `(e x g) s^2 + (e x f - q x g) s - q x f = 0` with `q = p - A`; both roots
of the quadratic (in the cancellation-free form; the single root `q x f / (e x f - q x g)` when
`e x g = 0`) are tried, `t`
follows from the component of the linear equation with the larger coefficient, and a root counts
when `(s, t)` lies in `[0, 1]^2` and reproduces `p`. The first cell (in row-major order) with a
solution wins. No walking, no guesses: every cell is tried, so it is slow and only for tests.
"""

import numpy as np
import torch


def _cross(a, b):
  return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def invert(grid, targets, tol=1e-9):
  """`grid [B, h, w, 2]`, `targets [B, M, 2]` -> `(warped [B, M, 2], covered [B, M])` (float64).

  `warped` is the normalised align_corners=True position over the grid's nodes; NaN where no
  cell covers the target.
  """
  grid = torch.as_tensor(np.array(grid), dtype=torch.float64)
  targets = torch.as_tensor(np.array(targets), dtype=torch.float64)
  b, h, w, _ = grid.shape
  a = grid[:, :-1, :-1].reshape(b, 1, -1, 2)
  bb = grid[:, :-1, 1:].reshape(b, 1, -1, 2)
  c = grid[:, 1:, :-1].reshape(b, 1, -1, 2)
  d = grid[:, 1:, 1:].reshape(b, 1, -1, 2)
  e, f, g = bb - a, c - a, a - bb - c + d
  q = targets[:, :, None, :] - a  # [B, M, cells, 2]
  a2 = _cross(e, g).expand(q.shape[:-1])
  a1 = _cross(e, f) - _cross(q, g)
  a0 = -_cross(q, f)
  disc = torch.clamp(a1 * a1 - 4 * a2 * a0, min=0).sqrt()
  # The root with no cancellation, -(a1 + sign(a1) disc) / (2 a2), and its partner from the
  # product of the roots, a0 / a2 (the textbook formula loses the small root when a2 is small).
  big = -(a1 + torch.where(a1 >= 0, disc, -disc)) / 2
  tiny = lambda x: torch.where(x.abs() < 1e-300, torch.full_like(x, 1e-300), x)
  linear = a2.abs() < 1e-14
  roots = [torch.where(linear, -a0 / tiny(a1), a0 / tiny(big)),
           torch.where(linear, -a0 / tiny(a1), big / tiny(a2))]
  cells_w = w - 1
  index = torch.arange((h - 1) * cells_w, dtype=torch.float64)
  col, row = index % cells_w, torch.div(index, cells_w, rounding_mode="floor")
  warped = torch.full(targets.shape, float("nan"), dtype=torch.float64)
  covered = torch.zeros(targets.shape[:-1], dtype=torch.bool)
  for s in roots:
    hvec = f + s[..., None] * g
    rhs = q - s[..., None] * e
    use_x = hvec[..., 0].abs() >= hvec[..., 1].abs()
    den = torch.where(use_x, hvec[..., 0], hvec[..., 1])
    num = torch.where(use_x, rhs[..., 0], rhs[..., 1])
    t = num / torch.where(den.abs() < 1e-300, torch.full_like(den, 1e-300), den)
    p = a + s[..., None] * e + t[..., None] * f + (s * t)[..., None] * g
    ok = ((s >= -tol) & (s <= 1 + tol) & (t >= -tol) & (t <= 1 + tol)
          & ((p - targets[:, :, None, :]).abs().amax(-1) < 1e-7))
    first = torch.argmax(ok.to(torch.int64), dim=-1)
    found = ok.any(-1) & ~covered
    pick = lambda x: torch.gather(x, -1, first[..., None])[..., 0]
    u = -1 + 2 * (col[first] + pick(s)) / cells_w
    v = -1 + 2 * (row[first] + pick(t)) / (h - 1)
    warped = torch.where(found[..., None], torch.stack([u, v], -1), warped)
    covered = covered | found
  return warped, covered
