"""The zoom-task suite: four procedural tasks whose class lives in small detail.

Every image (512 px by default) holds one *target*: a small tile inside a thick frame of a colour
that nothing else has (the demo's yellow), among `num_distractors` tiles of the same family in
other frame colours (with random classes), `num_clutter` plain rectangles and a smooth coloured
background. The class is drawn inside the target's tile in units of `cell_size` pixels (3):

- "zoom_glyph": which of 8 glyphs of 5x5 cells is printed (fixed random glyphs, all with the
  same number of ink cells and at least 6 cells apart from each other);
- "zoom_orientation": which way a T of 3x3 cells points (4 rotations);
- "zoom_count": how many (1-4) small dots of `cell_size + 1` pixels lie on the tile;
- "zoom_marker": which of 4 small squares (2x2, in reading order) carries an "x" where the
  other three carry a "+" (both of 5 ink cells).

Why a sampler wins here, by construction:
- Findable at low resolution: the framed target (48 px outer side at `cell_size` 3) is a large
  area of a unique colour, still a few pixels wide in a 64x64 view of the 512 px image.
- Unreadable after uniform downsampling by 8 (512 -> 64): a 3-pixel cell shrinks below half a
  pixel. By 4 it is under a pixel (partly readable), by 2 one and a half (readable).
- The class does not leak through the tile's mean colour: within glyphs, orientations and
  markers every class has the same ink; the count's one to four dots are hidden under the
  tile's random brightness (120-220), which varies far more than the dots' ink. Nor through
  position or size: every class has the same tile, placed uniformly at random.

The source is random access (`len`, `[index]`) and deterministic in `(seed, split, index)`, as
`SyntheticZoom`, so that grain reads it in any order and in any worker process.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from saliency_jax.data import config as config_lib
from saliency_jax.data import synthetic

FAMILIES = config_lib.ZOOM_TASKS
NUM_CLASSES = {"zoom_glyph": 8, "zoom_orientation": 4, "zoom_count": 4, "zoom_marker": 4}
SPLITS = synthetic.SPLITS


def _make_glyphs(count: int = 8, side: int = 5, ink: int = 11, distance: int = 6) -> np.ndarray:
  """`count` fixed random glyphs of `side x side` cells, `ink` cells each, pairwise `distance`
  cells apart (drawn once from a fixed seed, so that every install has the same glyphs)."""
  rng = np.random.default_rng(2018)
  glyphs: list[np.ndarray] = []
  while len(glyphs) < count:
    glyph = np.zeros(side * side, bool)
    glyph[rng.choice(side * side, ink, replace=False)] = True
    if all(np.sum(glyph != other) >= distance for other in glyphs):
      glyphs.append(glyph)
  return np.stack(glyphs).reshape(count, side, side)


GLYPHS = _make_glyphs()
_T = np.array([[1, 1, 1], [0, 1, 0], [0, 1, 0]], bool)
ORIENTATIONS = np.stack([np.rot90(_T, k) for k in range(4)])
PLUS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)
CROSS = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], bool)


def _cells(pattern: np.ndarray, cell: int) -> np.ndarray:
  """A boolean pattern of cells, each `cell x cell` pixels."""
  return np.kron(pattern, np.ones((cell, cell), bool))


@dataclasses.dataclass(frozen=True)
class ZoomTask:
  """Random-access source of one family of the suite (see the module docstring).

  Attributes:
    family: one of `FAMILIES`.
    size: number of examples (`len`).
    split: "train" or "eval": independent streams of images for the same seed.
    image_size: side of the square images in pixels.
    cell_size: side of one cell of the class's detail, in pixels; the tile is
      `6 cell_size + 14` pixels.
    frame_width: width of the coloured frame around each tile, in pixels.
    repeats: each tile is `repeats x repeats` copies of the class's tile (each drawn afresh:
      its own paper and placement of the same class), so that the target covers `repeats^2`
      times more of the image with detail as fine.
    num_distractors: tiles in other frame colours (at most as many as fit).
    num_clutter: plain rectangles in other colours.
    seed: generation seed; with `split` and the index it fixes every pixel.
  """

  family: str
  size: int
  split: str = "train"
  image_size: int = 512
  cell_size: int = 3
  frame_width: int = 8
  repeats: int = 1
  num_distractors: int = 3
  num_clutter: int = 6
  seed: int = 0

  def __post_init__(self):
    check = functools.partial(synthetic.check_field, self, "zoom")

    check("family", self.family in FAMILIES, f"one of {FAMILIES}")
    check("size", self.size >= 1, ">= 1")
    check("split", self.split in SPLITS, f"one of {SPLITS}")
    check("cell_size", self.cell_size >= 1, ">= 1")
    check("frame_width", self.frame_width >= 1, ">= 1")
    check("repeats", self.repeats >= 1, ">= 1")
    check("image_size", self.image_size >= self.object_side + 4,
          f">= the framed tile's side + 4 ({self.object_side + 4})")
    check("num_distractors", self.num_distractors >= 0, ">= 0")
    check("num_clutter", self.num_clutter >= 0, ">= 0")

  def __len__(self) -> int:
    return self.size

  @property
  def num_classes(self) -> int:
    return NUM_CLASSES[self.family]

  @property
  def tile_side(self) -> int:
    return 6 * self.cell_size + 14

  @property
  def object_side(self) -> int:
    """Outer side of a framed tile (of `repeats x repeats` tiles) in pixels."""
    return self.repeats * self.tile_side + 2 * self.frame_width

  def _tile(self, label: int, rng: np.random.Generator) -> np.ndarray:
    """The `[T, T, 3]` uint8 tile that shows class `label`."""
    t, c = self.tile_side, self.cell_size
    paper = rng.uniform(120, 220) if self.family == "zoom_count" else rng.uniform(170, 230)
    tile = np.full((t, t, 3), paper, np.float64) + rng.uniform(-12, 12, 3)
    ink = np.zeros((t, t), bool)

    def stamp(pattern: np.ndarray, y: int, x: int) -> None:
      h, w = pattern.shape
      ink[y:y + h, x:x + w] |= pattern

    if self.family == "zoom_glyph":
      glyph = _cells(GLYPHS[label], c)
      stamp(glyph, *(int(v) for v in rng.integers(0, t - glyph.shape[0] + 1, 2)))
    elif self.family == "zoom_orientation":
      mark = _cells(ORIENTATIONS[label], c)
      stamp(mark, *(int(v) for v in rng.integers(0, t - mark.shape[0] + 1, 2)))
    elif self.family == "zoom_count":
      # Slots on a 5x5 lattice, a gap of 2 pixels between neighbouring dots.
      spacing = c + 3
      for slot in rng.choice(25, label + 1, replace=False):
        y, x = 1 + spacing * (slot // 5), 1 + spacing * (slot % 5)
        stamp(np.ones((c + 1, c + 1), bool), int(y), int(x))
    else:  # zoom_marker: four light squares, 2x2; the odd one (reading order) has the "x".
      # At a random offset: a fixed layout would let area averaging read which square holds
      # the "x" (it spreads its ink to the corners, the "+" to the centre), measured 0.45 top-1.
      square, gap = 3 * c + 2, 2
      top, left = (int(v) for v in rng.integers(0, t - 2 * square - gap + 1, 2))
      for k in range(4):
        y, x = top + k // 2 * (square + gap), left + k % 2 * (square + gap)
        tile[y:y + square, x:x + square] = np.minimum(tile[y:y + square, x:x + square] + 30, 255)
        stamp(_cells(CROSS if k == label else PLUS, c), y + 1, x + 1)
    tile[ink] = rng.uniform(20, 60, 3)
    return np.clip(tile, 0, 255).astype(np.uint8)

  def _draw(self, image: np.ndarray, corner: tuple[int, int], frame: np.ndarray, label: int,
            rng: np.random.Generator) -> None:
    y, x = corner
    side, f = self.object_side, self.frame_width
    image[y:y + side, x:x + side] = frame
    t = self.tile_side
    for row in range(self.repeats):
      for col in range(self.repeats):
        top, left = y + f + row * t, x + f + col * t
        image[top:top + t, left:left + t] = self._tile(label, rng)

  def __getitem__(self, index: int) -> dict[str, np.ndarray | int]:
    """One example.

    Args:
      index: any integer; reduced modulo `len(self)`.

    Returns:
      `{"image": uint8 [S, S, 3], "label": int, "box": int32 [4]}`, `box` the target's framed
      square as `(top, left, bottom, right)` pixel bounds (bottom/right exclusive).
    """
    index = int(index) % self.size
    rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index,
                                 FAMILIES.index(self.family)])
    size, side = self.image_size, self.object_side
    image = synthetic.smooth_background(rng, size)
    synthetic.draw_clutter(image, rng, self.num_clutter, side)
    corners = synthetic.place_boxes(rng, 1 + self.num_distractors, side, size, margin=2)
    label = int(rng.integers(self.num_classes))
    for corner in corners[1:]:
      frame = synthetic.DISTRACTOR_COLOURS[rng.integers(len(synthetic.DISTRACTOR_COLOURS))]
      self._draw(image, corner, frame, int(rng.integers(self.num_classes)), rng)
    self._draw(image, corners[0], synthetic.TARGET_COLOUR, label, rng)
    top, left = corners[0]
    return {"image": image, "label": label,
            "box": np.array([top, left, top + side, left + side], np.int32)}
