"""Dense scenes: a procedural segmentation and detection task where small objects matter.

Every image (512 px by default) holds up to `max_large` large and `max_small` small objects of
`num_classes` classes on a smooth coloured background among plain clutter rectangles. An object
is a rectangle or an ellipse (of any aspect ratio from 2:3 to 3:2, whatever its class) inside a
yellow frame that nothing else has; the class is the pattern that fills it, one of
`synthetic.PATTERN_NAMES` (horizontal, vertical, diagonal bars, ...), drawn in a random
complementary colour pair (each pair averages to the same grey, so colour says nothing of the
class).

Why small objects need a zoom, by construction: the pattern's period is a quarter of the
object's side (at least 2 pixels). A large object (64-128 px) keeps 4-8 pixels per period after
downsampling 512 -> 128, where its class is readable; a small one (12-24 px) keeps at most 1.5,
where every pattern averages to the same flat grey. Both stay findable at low resolution: the
frame is a large area of a unique colour.

Layout and conventions:
- `image` uint8 `[S, S, 3]`;
- `mask` uint8 `[S, S]`: 0 for background (clutter included), `k + 1` on the pixels of an
  object of class `k` (frame included);
- `boxes` float32 `[M, 4]` with `M = max_small + max_large`: each object's tight box as
  `(x0, y0, x1, y1)` in pixel edges (the object covers columns `x0 .. x1 - 1`), the order of the
  ops' `warp_boxes`; `labels` int32 `[M]`: the class, or -1 on the padding rows (boxes of
  zeros) after the image's objects; `small` bool `[M]`: True for small objects.
Objects never overlap (a gap of 2 pixels), so the mask and the boxes agree exactly. An image may
hold no object at all (`min_objects=0`), which a dense model must train and evaluate on.

The source is random access (`len`, `[index]`) and deterministic in `(seed, split, index)`, as
the other procedural sources, so that grain reads it in any order and in any worker process.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from saliency_jax.data import synthetic

SPLITS = synthetic.SPLITS
FRAME_COLOUR = synthetic.TARGET_COLOUR
SMALL_SIDES = (12, 24)
LARGE_SIDES = (64, 128)
_GAP = 2


def _shape_mask(height: int, width: int, ellipse: bool) -> np.ndarray:
  """bool `[height, width]`: the whole box, or the ellipse inscribed in it."""
  if not ellipse:
    return np.ones((height, width), bool)
  y = (np.arange(height) + 0.5) / height * 2 - 1
  x = (np.arange(width) + 0.5) / width * 2 - 1
  return y[:, None] ** 2 + x[None, :] ** 2 <= 1.0


def _erode(mask: np.ndarray, width: int) -> np.ndarray:
  """`mask` less every pixel within `width` pixels (chessboard distance) of its outside."""
  padded = np.pad(mask, width, constant_values=False)
  inner = np.ones_like(mask)
  h, w = mask.shape
  for dy in range(2 * width + 1):
    for dx in range(2 * width + 1):
      inner &= padded[dy:dy + h, dx:dx + w]
  return inner


@dataclasses.dataclass(frozen=True)
class DenseScenes:
  """Random-access source of dense scenes (see the module docstring).

  Attributes:
    size: number of examples (`len`).
    split: "train" or "eval": independent streams of images for the same seed.
    image_size: side of the square images in pixels.
    num_classes: object classes, 1..`len(synthetic.PATTERN_NAMES)`.
    max_small: most small objects per image.
    max_large: most large objects per image.
    min_objects: fewest objects per image (0 allows empty images).
    num_clutter: plain background rectangles.
    seed: generation seed; with `split` and the index it fixes every pixel.
  """

  size: int
  split: str = "train"
  image_size: int = 512
  num_classes: int = 4
  max_small: int = 6
  max_large: int = 2
  min_objects: int = 1
  num_clutter: int = 6
  seed: int = 0

  def __post_init__(self):
    check = functools.partial(synthetic.check_field, self, "dense")

    check("size", self.size >= 1, ">= 1")
    check("split", self.split in SPLITS, f"one of {SPLITS}")
    check("num_classes", 1 <= self.num_classes <= synthetic.NUM_PATTERNS,
          f"in [1, {synthetic.NUM_PATTERNS}]")
    check("max_small", self.max_small >= 0, ">= 0")
    check("max_large", self.max_large >= 0, ">= 0")
    check("min_objects", 0 <= self.min_objects <= self.max_small + self.max_large,
          f"in [0, max_small + max_large = {self.max_small + self.max_large}]")
    check("num_clutter", self.num_clutter >= 0, ">= 0")
    # Room enough that rejection sampling places every object: at most a quarter of the image
    # for all of them at their largest.
    area = (self.max_large * (LARGE_SIDES[1] + _GAP) ** 2
            + self.max_small * (SMALL_SIDES[1] + _GAP) ** 2)
    largest = (LARGE_SIDES if self.max_large else SMALL_SIDES)[1] + 2 * _GAP
    check("image_size", self.image_size >= max(largest, 2 * area ** 0.5),
          f">= {max(largest, int(np.ceil(2 * area ** 0.5)))} for these object counts")

  def __len__(self) -> int:
    return self.size

  @property
  def max_objects(self) -> int:
    """Rows of `boxes`, `labels` and `small`."""
    return self.max_small + self.max_large

  def _place(self, rng: np.random.Generator, sides: list[tuple[int, int]]
             ) -> list[tuple[int, int, int, int] | None]:
    """Non-overlapping `(y, x, h, w)` boxes for the `(h, w)` sides (largest first); a side that
    finds no room in 200 tries is dropped (never seen at the sizes `__post_init__` allows)."""
    placed: list[tuple[int, int, int, int]] = []
    result: list[tuple[int, int, int, int] | None] = []
    for h, w in sides:
      box = None
      for _ in range(200):
        y = int(rng.integers(_GAP, self.image_size - h - _GAP + 1))
        x = int(rng.integers(_GAP, self.image_size - w - _GAP + 1))
        if all(y >= py + ph + _GAP or py >= y + h + _GAP or x >= px + pw + _GAP
               or px >= x + w + _GAP for py, px, ph, pw in placed):
          box = (y, x, h, w)
          placed.append(box)
          break
      result.append(box)
    return result

  def _layout(self, index: int) -> list[dict]:
    """The objects of image `index`: position, shape, class and look, drawn from their own
    stream (so that `objects` need not render the pixels)."""
    rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index, 11])
    while True:
      counts = (int(rng.integers(self.max_large + 1)), int(rng.integers(self.max_small + 1)))
      if sum(counts) >= self.min_objects:
        break
    sides, small = [], []
    for count, (low, high), is_small in ((counts[0], LARGE_SIDES, False),
                                         (counts[1], SMALL_SIDES, True)):
      for _ in range(count):
        side = int(rng.integers(low, high + 1))
        aspect = rng.uniform(2 / 3, 3 / 2)
        # The longer side is `side`, the shorter at least two thirds of it.
        sides.append((int(round(side * min(aspect, 1.0))), int(round(side / max(aspect, 1.0)))))
        small.append(is_small)
    objects = []
    for placed, is_small in zip(self._place(rng, sides), small):
      if placed is None:
        continue
      y, x, h, w = placed
      label = int(rng.integers(self.num_classes))
      shape = _shape_mask(h, w, ellipse=bool(rng.integers(2)))
      period = max(2, 2 * (min(h, w) // 8))
      rows, cols = np.nonzero(shape)
      objects.append({
          "y": y, "x": x, "shape": shape, "label": label, "small": is_small, "period": period,
          "phase": tuple(int(v) for v in rng.integers(0, period, 2)),
          "pair": synthetic.COLOUR_PAIRS[rng.integers(len(synthetic.COLOUR_PAIRS))],
          "box": (x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1)})
    return objects

  def objects(self, index: int) -> dict[str, np.ndarray]:
    """The `boxes`, `labels` and `small` of example `index`, without rendering its image."""
    return self._targets(self._layout(int(index) % self.size))

  def _targets(self, objects: list[dict]) -> dict[str, np.ndarray]:
    boxes = np.zeros((self.max_objects, 4), np.float32)
    labels = np.full((self.max_objects,), -1, np.int32)
    small = np.zeros((self.max_objects,), bool)
    for k, obj in enumerate(objects):
      boxes[k], labels[k], small[k] = obj["box"], obj["label"], obj["small"]
    return {"boxes": boxes, "labels": labels, "small": small}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    """One example: `{"image", "mask", "boxes", "labels", "small"}` (see the module docstring).

    Args:
      index: any integer; reduced modulo `len(self)`.
    """
    index = int(index) % self.size
    objects = self._layout(index)
    rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index, 12])
    size = self.image_size
    image = synthetic.smooth_background(rng, size)
    synthetic.draw_clutter(image, rng, self.num_clutter, 24)
    mask = np.zeros((size, size), np.uint8)
    for obj in objects:
      shape = obj["shape"]
      h, w = shape.shape
      y, x = obj["y"], obj["x"]
      inner = _erode(shape, max(2, min(h, w) // 8))
      texture = synthetic.texture_mask(obj["label"], max(h, w), obj["period"], obj["phase"])
      pair = obj["pair"]
      fill = np.where(texture[:h, :w, None], pair[0], pair[1])
      patch = image[y:y + h, x:x + w]
      patch[shape] = FRAME_COLOUR
      patch[inner] = fill[inner]
      mask[y:y + h, x:x + w][shape] = obj["label"] + 1
    return {"image": image, "mask": mask, **self._targets(objects)}
