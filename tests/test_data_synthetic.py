"""The synthetic zoom task (saliency_jax.data.synthetic).

The textures are checked against hand-written definitions of the six patterns (bars in four
orientations, checkerboard, chevrons, each with period p: half-period stripes of width p/2), and
the "unreadable after uniform downsampling" property against its arithmetic: every window of
p x p pixels holds exactly half of each of two complementary colours, so its mean is 127.5.
"""

import numpy as np
import pytest

from saliency_jax.data import synthetic

# Hand-derived pattern definitions; f(y, x, h) -> 0/1 with h = period / 2.
PATTERNS = {
    0: lambda y, x, h: (y // h) % 2,  # Horizontal bars.
    1: lambda y, x, h: (x // h) % 2,  # Vertical bars.
    2: lambda y, x, h: ((x + y) // h) % 2,  # Bars along x + y = const.
    3: lambda y, x, h: ((x - y) // h) % 2,  # Bars along x - y = const.
    4: lambda y, x, h: (x // h + y // h) % 2,  # Checkerboard of h x h squares.
    5: lambda y, x, h: ((y + np.abs(x % (2 * h) - h)) // h) % 2,  # Chevrons.
}


def _panel(example, source):
  top, left, bottom, right = example["box"]
  f = source.frame_width
  return example["image"][top + f:bottom - f, left + f:right - f]


def _matching_patterns(binary, period):
  """Every (pattern, phase) whose definition reproduces `binary` exactly."""
  size = binary.shape[0]
  y, x = np.mgrid[0:size, 0:size]
  found = set()
  for pattern, f in PATTERNS.items():
    for dy in range(period):
      for dx in range(period):
        if np.array_equal(f(y + dy, x + dx, period // 2).astype(bool), binary):
          found.add(pattern)
  return found


def test_deterministic_in_seed_split_and_index():
  a = synthetic.SyntheticZoom(size=10, image_size=128, object_size=16, frame_width=4,
                              detail_period=4, seed=3)
  b = synthetic.SyntheticZoom(size=10, image_size=128, object_size=16, frame_width=4,
                              detail_period=4, seed=3)
  for index in (0, 7):
    np.testing.assert_array_equal(a[index]["image"], b[index]["image"])
    assert a[index]["label"] == b[index]["label"]
  assert not np.array_equal(a[0]["image"], a[1]["image"])
  other_seed = synthetic.SyntheticZoom(size=10, image_size=128, object_size=16, frame_width=4,
                                       detail_period=4, seed=4)
  assert not np.array_equal(a[0]["image"], other_seed[0]["image"])
  evaluation = synthetic.SyntheticZoom(size=10, split="eval", image_size=128, object_size=16,
                                       frame_width=4, detail_period=4, seed=3)
  assert not np.array_equal(a[0]["image"], evaluation[0]["image"])
  np.testing.assert_array_equal(a[12]["image"], a[2]["image"])  # Index modulo len.


@pytest.mark.parametrize("num_classes, period", [(6, 8), (24, 4)])
def test_label_is_the_target_texture(num_classes, period):
  source = synthetic.SyntheticZoom(size=40, image_size=160, num_classes=num_classes,
                                   object_size=24, frame_width=4, detail_period=period,
                                   num_distractors=3, num_clutter=3, seed=1)
  labels = []
  for index in range(len(source)):
    example = source[index]
    label = example["label"]
    labels.append(label)
    image, (top, left, bottom, right) = example["image"], example["box"]
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8
    # The target's frame is the unique yellow.
    frame = np.concatenate([image[top, left:right], image[bottom - 1, left:right],
                            image[top:bottom, left], image[top:bottom, right - 1]])
    assert (frame == synthetic.TARGET_COLOUR).all()
    panel = _panel(example, source)
    dark, light = synthetic.COLOUR_PAIRS[label // synthetic.NUM_PATTERNS]
    is_light = (panel == light).all(-1)
    assert (is_light | (panel == dark).all(-1)).all(), "panel uses exactly the class's colours"
    assert _matching_patterns(is_light, period) == {label % synthetic.NUM_PATTERNS}
  assert set(labels) <= set(range(num_classes))
  # Labels are drawn uniformly: 40 draws cover all 6 classes and most of 24.
  assert len(set(labels)) >= min(num_classes, 15), sorted(set(labels))


def test_uniform_downsampling_by_the_period_erases_the_class():
  period = 8
  source = synthetic.SyntheticZoom(size=30, image_size=256, object_size=40, frame_width=8,
                                   detail_period=period, seed=0)
  for index in range(len(source)):
    panel = _panel(source[index], source).astype(np.float64)
    assert panel.std() > 100  # Full resolution: high-contrast texture, readable.
    # Any period x period window, at any offset: exactly half of each colour -> 127.5.
    windows = np.lib.stride_tricks.sliding_window_view(panel, (period, period), axis=(0, 1))
    np.testing.assert_allclose(windows.mean(axis=(-2, -1)), 127.5, atol=1e-9)


def test_knobs():
  source = synthetic.SyntheticZoom(size=5, image_size=300, object_size=30, frame_width=5,
                                   detail_period=6, num_distractors=0, num_clutter=0)
  for index in range(5):
    example = source[index]
    assert example["image"].shape == (300, 300, 3)
    top, left, bottom, right = example["box"]
    assert bottom - top == right - left == 40
    colours = example["image"].reshape(-1, 3)
    for colour in synthetic.DISTRACTOR_COLOURS:
      assert not (colours == colour).all(-1).any()

  side, inner = 40, 30
  crowded = synthetic.SyntheticZoom(size=5, image_size=300, object_size=inner, frame_width=5,
                                    detail_period=6, num_distractors=3, num_clutter=0)
  for index in range(5):
    colours = crowded[index]["image"].reshape(-1, 3)
    frame_pixels = sum(int((colours == c).all(-1).sum()) for c in synthetic.DISTRACTOR_COLOURS)
    # Three non-overlapping distractor frames, each side^2 - inner^2 pixels.
    assert frame_pixels == 3 * (side**2 - inner**2)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 25}, "num_classes"),
    ({"detail_period": 5}, "detail_period"),
    ({"object_size": 4}, "object_size"),
    ({"image_size": 40}, "image_size"),
    ({"split": "test"}, "split"),
])
def test_bad_knobs_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    synthetic.SyntheticZoom(size=4, **kwargs)


def test_texture_mask_rejects_unknown_pattern():
  with pytest.raises(ValueError, match="pattern"):
    synthetic.texture_mask(6, 8, 4, (0, 0))
