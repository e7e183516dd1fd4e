"""Measurement: can the synthetic task's class be read after uniform downsampling vs zooming?

For images of the synthetic task (default: 512 px, six classes, detail period = image size /
task size = 8) the target's panel is viewed as a network with a 64x64 input would see it:
- uniform, area: the whole image average-pooled 512 -> 64 (the low-resolution view);
- uniform, point: bilinear point samples at stride 8 (a uniform sampling grid);
- zoomed m x: bilinear point samples at stride 8 / m around the target (what a sampler that
  magnifies the target m times delivers there).
Each view is classified with two simple classifiers fitted on 1,200 examples and tested on 600:
ridge regression on the pixels, and ridge regression on texture features (autocorrelations of
the grey view at 8 small shifts, which are invariant to the texture's phase). Chance is 1/6.
The target's location is given to every view, so the uniform numbers are an upper bound.

    python benchmarks/synthetic_readability.py
    python benchmarks/synthetic_readability.py --image_size=256 --task_size=64 \
        --object_size=20 --frame_width=4        # the demo config's task
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from saliency_jax.data import synthetic  # noqa: E402

SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0), (2, 2), (2, -2))


def bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
  """Bilinear samples of a 2-D image at the grid `ys x xs` (pixel-centre coordinates)."""
  y0 = np.clip(np.floor(ys).astype(int), 0, image.shape[0] - 2)
  x0 = np.clip(np.floor(xs).astype(int), 0, image.shape[1] - 2)
  fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
  top = image[y0][:, x0] * (1 - fx) + image[y0][:, x0 + 1] * fx
  bottom = image[y0 + 1][:, x0] * (1 - fx) + image[y0 + 1][:, x0 + 1] * fx
  return top * (1 - fy) + bottom * fy


def view(example: dict, mode: str, zoom: float, rng: np.random.Generator, *,
         task_size: int) -> np.ndarray:
  gray = example["image"].astype(np.float64).mean(-1)
  factor = gray.shape[0] // task_size
  top, left, bottom, right = example["box"]
  if mode == "area":
    pooled = gray.reshape(task_size, factor, task_size, factor).mean((1, 3))
    y, x = top // factor, left // factor
    side = (bottom - top) // factor + 3
    return np.pad(pooled, 2)[y:y + side, x:x + side]
  stride = factor / zoom
  centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
  half = (bottom - top) / 2 * 0.8  # The panel's inner 80 %: where the texture is.
  steps = np.arange(-half, half, stride)
  if mode == "point":  # The uniform grid's phase relative to the target is arbitrary.
    steps = steps + rng.uniform(0, stride)
  return bilinear(gray, centre_y + steps, centre_x + steps)


def texture_features(patches: list[np.ndarray]) -> np.ndarray:
  rows = []
  for patch in patches:
    centred = patch - patch.mean()
    energy = (centred**2).mean() + 1e-6
    feats = [energy / 1e3]
    height, width = centred.shape
    for dy, dx in SHIFTS:
      a = centred[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)]
      b = centred[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
      feats.append((a * b).mean() / energy)
    rows.append(feats)
  return np.asarray(rows)


def ridge_accuracy(train_x, train_y, test_x, test_y, classes) -> float:
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  a = np.c_[(train_x - mean) / std, np.ones(len(train_x))]
  b = np.c_[(test_x - mean) / std, np.ones(len(test_x))]
  weights = np.linalg.solve(a.T @ a + 1.0 * np.eye(a.shape[1]), a.T @ np.eye(classes)[train_y])
  return float((np.argmax(b @ weights, 1) == test_y).mean())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=512)
  parser.add_argument("--task_size", type=int, default=64)
  parser.add_argument("--object_size", type=int, default=40)
  parser.add_argument("--frame_width", type=int, default=8)
  args = parser.parse_args()
  factor = args.image_size // args.task_size
  source = synthetic.SyntheticZoom(size=1800, image_size=args.image_size,
                                   object_size=args.object_size, frame_width=args.frame_width,
                                   detail_period=factor)
  rng = np.random.default_rng(0)
  examples = [source[i] for i in range(len(source))]
  labels = np.array([e["label"] for e in examples])
  split = 1200
  print(f"{'view':22s} {'pixels':>8s} {'texture':>8s}   (chance {1 / source.num_classes:.2f})")
  area = f"uniform, area {args.image_size}->{args.task_size}"
  for name, mode, zoom in ((area, "area", 1), ("uniform, point", "point", 1),
                           ("zoomed 2x", "point", 2), ("zoomed 3x", "point", 3),
                           ("zoomed 4x", "point", 4)):
    patches = [view(e, mode, zoom, rng, task_size=args.task_size) for e in examples]
    size = min(p.shape[0] for p in patches)
    pixels = np.stack([p[:size, :size].ravel() for p in patches])
    texture = texture_features([p[:size, :size] for p in patches])
    scores = [ridge_accuracy(x[:split], labels[:split], x[split:], labels[split:],
                             source.num_classes) for x in (pixels, texture)]
    print(f"{name:22s} {scores[0]:8.2f} {scores[1]:8.2f}")


if __name__ == "__main__":
  main()
