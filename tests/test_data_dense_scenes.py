"""The dense-scenes source: deterministic, masks and boxes that agree, small and large objects."""
import numpy as np
import pytest

from saliency_jax.data import dense_scenes, synthetic


@pytest.fixture(scope="module")
def examples():
  source = dense_scenes.DenseScenes(size=24, seed=3)
  return source, [source[i] for i in range(len(source))]


def test_same_seed_split_and_index_give_the_same_scene(examples):
  source, got = examples
  again = dense_scenes.DenseScenes(size=24, seed=3)[5]
  for key in got[5]:
    np.testing.assert_array_equal(again[key], got[5][key])
  other = dense_scenes.DenseScenes(size=24, seed=3, split="eval")[5]
  assert not np.array_equal(other["image"], got[5]["image"])
  np.testing.assert_array_equal(source[5 + len(source)]["mask"], got[5]["mask"])


def test_layout_and_types(examples):
  source, got = examples
  for example in got:
    assert example["image"].shape == (512, 512, 3) and example["image"].dtype == np.uint8
    assert example["mask"].shape == (512, 512) and example["mask"].dtype == np.uint8
    assert example["boxes"].shape == (source.max_objects, 4)
    assert example["boxes"].dtype == np.float32
    assert example["labels"].dtype == np.int32 and example["small"].dtype == bool
    count = int((example["labels"] >= 0).sum())
    assert count >= 1
    # The image's objects first, then padding: class -1, a box of zeros, not small.
    assert (example["labels"][:count] >= 0).all() and (example["labels"][count:] == -1).all()
    assert not example["boxes"][count:].any() and not example["small"][count:].any()
    assert example["mask"].max() <= source.num_classes


def test_each_box_is_the_tight_box_of_its_objects_mask_pixels(examples):
  # Reference: the mask alone. Objects do not touch (a 2-pixel gap), so the connected mask
  # pixels inside a box are that object's; together the boxes hold every object pixel.
  _, got = examples
  for example in got:
    mask, covered = example["mask"], np.zeros(example["mask"].shape, bool)
    for box, label in zip(example["boxes"], example["labels"]):
      if label < 0:
        continue
      x0, y0, x1, y1 = (int(v) for v in box)
      inside = mask[y0:y1, x0:x1] == label + 1
      rows, cols = np.nonzero(inside)
      assert (rows.min(), cols.min(), rows.max(), cols.max()) == (0, 0, y1 - y0 - 1, x1 - x0 - 1)
      assert set(np.unique(mask[y0:y1, x0:x1])) <= {0, label + 1}
      covered[y0:y1, x0:x1] = True
    assert not mask[~covered].any()


def test_small_and_large_objects_have_their_sizes(examples):
  _, got = examples
  sides = {True: [], False: []}
  for example in got:
    for box, label, small in zip(example["boxes"], example["labels"], example["small"]):
      if label >= 0:
        sides[bool(small)].append(max(box[2] - box[0], box[3] - box[1]))
  assert sides[True] and sides[False]
  low, high = dense_scenes.SMALL_SIDES
  assert low - 1 <= min(sides[True]) and max(sides[True]) <= high
  low, high = dense_scenes.LARGE_SIDES
  assert low - 1 <= min(sides[False]) and max(sides[False]) <= high


def test_the_class_is_the_pattern_not_the_colour(examples):
  # Every object's interior (its frame excluded) is one complementary pair of the demo's: the
  # mean colour over many objects of each class is the same grey, to within sampling noise.
  _, got = examples
  means = {}
  for example in got:
    image = example["image"].astype(np.float64)
    for box, label in zip(example["boxes"], example["labels"]):
      if label < 0:
        continue
      x0, y0, x1, y1 = (int(v) for v in box)
      region = image[y0:y1, x0:x1][example["mask"][y0:y1, x0:x1] == label + 1]
      inner = region[np.any(region != dense_scenes.FRAME_COLOUR, axis=-1)]
      assert np.isin(inner, synthetic.COLOUR_PAIRS).all()
      means.setdefault(int(label), []).append(inner.mean())
  assert len(means) == 4
  for label, values in means.items():
    assert abs(np.mean(values) - 127.5) < 30, (label, np.mean(values))


def test_min_objects_zero_gives_empty_scenes():
  source = dense_scenes.DenseScenes(size=64, min_objects=0, max_small=1, max_large=1)
  counts = [int((source[i]["labels"] >= 0).sum()) for i in range(len(source))]
  assert 0 in counts and max(counts) == 2
  empty = source[counts.index(0)]
  assert not empty["mask"].any() and not empty["boxes"].any()


@pytest.mark.parametrize("fields,message", [
    ({"size": 0}, "dense.size: expected >= 1, got 0."),
    ({"split": "test"}, "dense.split: expected one of ('train', 'eval'), got 'test'."),
    ({"num_classes": 7}, "dense.num_classes: expected in [1, 6], got 7."),
    ({"max_small": -1}, "dense.max_small: expected >= 0, got -1."),
    ({"min_objects": 9}, "dense.min_objects: expected in [0, max_small + max_large = 8], got 9."),
    ({"image_size": 256}, "dense.image_size: expected >= 390 for these object counts, got 256."),
])
def test_bad_fields_are_refused(fields, message):
  with pytest.raises(ValueError) as error:
    dense_scenes.DenseScenes(**{"size": 4, **fields})
  assert str(error.value) == message
