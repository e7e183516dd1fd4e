"""The zoom-task suite (saliency_jax.data.zoom_tasks).

Each family's class is read back from the full-resolution tile by an independent decoder written
here (ink pixels -> cells -> the family's definition: glyph table, T rotation, dot count, which
square holds the "x"), and its absence at low resolution is checked the way a network could
exploit it: equal ink across classes, and a nearest-class-mean classifier on the target tile
area-averaged by 8 (what 512 -> 64 downsampling leaves) staying near chance, while the same
classifier reads the class from the full-resolution ink.
"""

import numpy as np
import pytest

from saliency_jax import data
from saliency_jax.data import synthetic
from saliency_jax.data import zoom_tasks
from saliency_jax.data.zoom_tasks import ZoomTask


def _tile(example, source):
  top, left, bottom, right = example["box"]
  f = source.frame_width
  return example["image"][top + f:bottom - f, left + f:right - f]


def _ink(tile):
  # Ink is drawn at 20..60 per channel, paper at 158..242 (170..230 +- 12; count 108..232).
  return tile.max(-1) < 90


def _cells(mask, cell):
  """The cell pattern of the ink's bounding box (every cell all ink or all paper)."""
  ys, xs = np.nonzero(mask)
  box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
  return box[::cell, ::cell]


def decode(example, source):
  """The class, read from the full-resolution tile by the family's definition."""
  tile, c = _tile(example, source), source.cell_size
  ink = _ink(tile)
  if source.family == "zoom_glyph":
    # A glyph can have empty border rows/columns: match it inside its own bounding box.
    for label, glyph in enumerate(zoom_tasks.GLYPHS):
      ys, xs = np.nonzero(glyph)
      if np.array_equal(_cells(ink, c), glyph[ys.min():ys.max() + 1, xs.min():xs.max() + 1]):
        return label
  elif source.family == "zoom_orientation":
    for label, mark in enumerate(zoom_tasks.ORIENTATIONS):
      if np.array_equal(_cells(ink, c), mark):
        return label
  elif source.family == "zoom_count":
    # Dots are (c + 1)-pixel squares that never touch.
    dots, rest = divmod(int(ink.sum()), (c + 1) ** 2)
    return dots - 1 if rest == 0 else None
  else:
    # Four 3x3-cell marks in a 2x2 layout, 3c + 4 px apart (3c + 2 px squares, 2 px gaps); both
    # "+" and "x" ink their top row and left column, so the ink's corner is the first mark's.
    ys, xs = np.nonzero(ink)
    pitch, mark = 3 * c + 4, 3 * c
    corners = [(ys.min() + k // 2 * pitch, xs.min() + k % 2 * pitch) for k in range(4)]
    odd = [k for k, (y, x) in enumerate(corners)
           if np.array_equal(_cells(ink[y:y + mark, x:x + mark], c), zoom_tasks.CROSS)]
    if len(odd) == 1:
      return odd[0]
  return None


@pytest.fixture(scope="module", params=zoom_tasks.FAMILIES)
def family_examples(request):
  source = ZoomTask(request.param, 300)
  return source, [source[i] for i in range(len(source))]


def test_the_class_is_drawn_in_the_target(family_examples):
  source, examples = family_examples
  labels = [e["label"] for e in examples]
  assert [decode(e, source) for e in examples] == labels
  assert sorted(set(labels)) == list(range(zoom_tasks.NUM_CLASSES[source.family]))


def test_target_frame_and_image(family_examples):
  source, examples = family_examples
  for e in examples[:20]:
    assert e["image"].shape == (512, 512, 3) and e["image"].dtype == np.uint8
    top, left, bottom, right = e["box"]
    assert 0 <= top < bottom <= 512 and 0 <= left < right <= 512
    assert bottom - top == right - left == source.object_side == 48  # 6 * 3 + 14 + 2 * 8.
    frame = e["image"][top:bottom, left:right].copy()
    f = source.frame_width
    frame[f:-f, f:-f] = synthetic.TARGET_COLOUR
    assert (frame == synthetic.TARGET_COLOUR).all()


def _nearest_mean_accuracy(features, labels, classes):
  """Top-1 of a nearest-class-mean classifier fit on the first 200 examples, on the rest."""
  fit, held_out = slice(0, 200), slice(200, None)
  means = np.stack([features[fit][labels[fit] == k].mean(0) for k in range(classes)])
  distances = ((features[held_out][:, None] - means[None]) ** 2).sum(-1)
  return float((np.argmin(distances, axis=1) == labels[held_out]).mean())


def _aligned_ink(tile):
  """The ink mask moved to the tile's corner: the detail without its random offset."""
  ink = _ink(tile)
  ys, xs = np.nonzero(ink)
  aligned = np.zeros_like(ink)
  corner = ink[ys.min():, xs.min():]
  aligned[:corner.shape[0], :corner.shape[1]] = corner
  return aligned.ravel().astype(np.float64)


def test_no_class_leak_at_low_resolution(family_examples):
  source, examples = family_examples
  labels = np.array([e["label"] for e in examples])
  tiles = [_tile(e, source).astype(np.float64) for e in examples]
  classes = zoom_tasks.NUM_CLASSES[source.family]
  if source.family != "zoom_count":  # Equal ink in every class, by construction.
    assert len({int(_ink(t).sum()) for t in tiles}) == 1
    # Their class is a shape, and the same classifier reads it at full resolution (measured
    # 1.0 for all three); the count's full-resolution reading is `decode`'s dot count.
    full = _nearest_mean_accuracy(np.stack([_aligned_ink(t) for t in tiles]), labels, classes)
    assert full > 1 / classes + 0.5, full
  side = tiles[0].shape[0] // 8 * 8
  pooled = np.stack([t[:side, :side].reshape(side // 8, 8, side // 8, 8, 3).mean((1, 3)).ravel()
                     for t in tiles])
  accuracy = _nearest_mean_accuracy(pooled, labels, classes)
  # Measured 0.18 / 0.21 / 0.22 / 0.28 (glyph, orientation, count, marker) against chance
  # 0.125 / 0.25 / 0.25 / 0.25; a leak of the class into the mean colour would read near 1, and
  # the marker's squares at a fixed place in the tile read 0.45 (200 + 200 examples).
  assert accuracy < 1 / classes + 0.15, accuracy


@pytest.mark.parametrize("family", zoom_tasks.FAMILIES)
def test_repeats_tile_the_class(family):
  """With `repeats` r the frame holds r x r tiles, each of which the decoder reads as the label."""
  source, plain = ZoomTask(family, 6, repeats=2), ZoomTask(family, 1)
  t, f = source.tile_side, source.frame_width
  for example in (source[i] for i in range(len(source))):
    top, left, bottom, right = example["box"]
    assert bottom - top == right - left == source.object_side == 2 * t + 2 * f
    for row in range(2):
      for col in range(2):
        y, x = top + row * t, left + col * t  # The sub-tile framed as a plain target would be.
        sub = {"image": example["image"], "box": np.array([y, x, y + t + 2 * f, x + t + 2 * f])}
        assert decode(sub, plain) == example["label"]


def test_deterministic_per_seed_split_and_index():
  a, b = ZoomTask("zoom_count", 10), ZoomTask("zoom_count", 10)
  np.testing.assert_array_equal(a[3]["image"], b[3]["image"])
  np.testing.assert_array_equal(a[13]["image"], a[3]["image"])  # Index modulo the size.
  others = [ZoomTask("zoom_count", 10, split="eval")[3], ZoomTask("zoom_count", 10, seed=1)[3],
            ZoomTask("zoom_marker", 10)[3]]
  for other in others:
    assert not np.array_equal(a[3]["image"], other["image"])


def test_glyphs_are_distinct_and_of_equal_ink():
  glyphs = zoom_tasks.GLYPHS.reshape(len(zoom_tasks.GLYPHS), -1)
  assert set(glyphs.sum(1)) == {11}
  distances = (glyphs[:, None] != glyphs[None]).sum(-1)
  assert distances[~np.eye(len(glyphs), dtype=bool)].min() >= 6


@pytest.mark.parametrize("kwargs,message", [
    ({"family": "zoom_text"}, r"zoom.family: expected one of .*got 'zoom_text'"),
    ({"size": 0}, r"zoom.size: expected >= 1, got 0"),
    ({"split": "test"}, r"zoom.split: expected one of \('train', 'eval'\), got 'test'"),
    ({"cell_size": 0}, r"zoom.cell_size: expected >= 1, got 0"),
    ({"image_size": 40}, r"zoom.image_size: expected >= the framed tile's side \+ 4 \(52\)"),
    ({"num_clutter": -1}, r"zoom.num_clutter: expected >= 0, got -1"),
    ({"repeats": 0}, r"zoom.repeats: expected >= 1, got 0"),
    ({"repeats": 16}, r"zoom.image_size: expected >= the framed tile's side \+ 4 \(532\)"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ZoomTask(**{"family": "zoom_glyph", "size": 4, **kwargs})


def test_through_the_data_config_and_loader():
  config = {"name": "zoom_count", "image_size": 64, "zoom": {"train_size": 8, "eval_size": 8}}
  info = data.dataset_info(config)
  assert (info.task, info.num_outputs, info.train_size, info.eval_size) == (
      "classification", 4, 8, 8)
  import jax  # pylint: disable=g-import-not-at-top
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  loader = data.make_loader(config, split="train", global_batch_size=8, mesh=mesh, seed=0)
  batch = next(iter(loader))
  loader.close()
  assert batch["image"].shape == (8, 64, 64, 3) and batch["label"].shape == (8,)
  expected = [ZoomTask("zoom_count", 8, image_size=64)[i]["label"] for i in range(8)]
  assert sorted(np.asarray(batch["label"]).tolist()) == sorted(expected)
  for bad, message in [({"zoom": {"cell_size": 0}}, r"data.zoom.cell_size: expected >= 1"),
                       ({"eval_split": "test"},
                        r"data.eval_split: expected '', 'eval' or 'train' for the procedural")]:
    with pytest.raises(ValueError, match=message):
      data.dataset_info({**config, **bad})
