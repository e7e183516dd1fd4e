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


def test_objects_gives_the_rendered_scenes_targets_without_rendering(examples):
  source, got = examples
  for index in (0, 7, 23):
    objects = source.objects(index)
    assert sorted(objects) == ["boxes", "labels", "small"]
    for key, value in objects.items():
      np.testing.assert_array_equal(value, got[index][key])


# ---------------------------------------------------------------------------------------------
# The dense record checks (saliency_jax.data.dense_records) and the loader's dense batches.

from saliency_jax.data import dense_records  # pylint: disable=wrong-import-position


def _record(**changes):
  record = {"mask": np.zeros((16, 16), np.uint8), "labels": np.array([1, -1], np.int32),
            "boxes": np.array([[2, 3, 6, 9], [0, 0, 0, 0]], np.float32),
            "small": np.array([True, False])}
  record["mask"][3:9, 2:6] = 2
  record.update(changes)
  return record


@pytest.mark.parametrize("changes,message", [
    ({"mask": np.zeros((16, 15), np.uint8)}, r"mask of shape \(16, 16\), the image's; got "
                                             r"\(16, 15\)"),
    ({"mask": np.full((16, 16), 4, np.uint8)}, r"mask values in \[0, 3\]"),
    ({"labels": np.array([3, -1], np.int32)}, r"labels in \[0, 3\) or -1 for padding; got "
                                              r"\[-1, 3\]"),
    ({"labels": np.array([-1, 1], np.int32)}, "padding rows .* after every object"),
    ({"labels": np.array([1.0, -1.0])}, "integer labels; got dtype float64"),
    ({"boxes": np.array([[2, 3, 17, 9], [0, 0, 0, 0]], np.float32)},
     r"0 <= x0 <= x1 <= 16 .* got \[2.0, 3.0, 17.0, 9.0\] in row 0"),
    ({"boxes": np.array([[6, 3, 2, 9], [0, 0, 0, 0]], np.float32)}, "x0 <= x1"),
    ({"boxes": np.array([[2, 3, 6, np.nan], [0, 0, 0, 0]], np.float32)}, "in row 0"),
    ({"boxes": np.zeros((3, 4), np.float32)}, r"boxes \[M, 4\], labels \[M\]"),
    ({"small": None}, "small missing"),
])
def test_bad_dense_records_are_refused_with_the_record_named(changes, message):
  record = _record(**changes)
  if record["small"] is None:
    del record["small"]
  with pytest.raises(ValueError, match=f"dense record 4: expected .*{message}"):
    dense_records.targets(record, size=16, num_classes=3, index=4)


def test_a_valid_record_and_an_empty_one_pass_the_checks():
  targets = dense_records.targets(_record(), size=16, num_classes=3, index=0)
  assert sorted(targets) == sorted(dense_records.FIELDS)
  assert targets["segmentation"].dtype == np.uint8 and targets["small"].tolist() == [True, False]
  empty = _record(mask=np.zeros((16, 16), np.uint8), labels=np.array([-1, -1], np.int32))
  assert dense_records.targets(empty, size=16, num_classes=3, index=0)["labels"].tolist() == [
      -1, -1]


def test_the_loader_delivers_the_sources_targets_and_pads_evaluation():
  from saliency_jax import data  # pylint: disable=import-outside-toplevel
  from saliency_jax.train import make_mesh  # pylint: disable=import-outside-toplevel
  config = {"name": "dense_scenes", "image_size": 272,
            "dense": {"train_size": 8, "eval_size": 3, "max_large": 1, "max_small": 2}}
  assert data.dataset_info(config).task == "dense"
  loader = data.make_loader(config, split="eval", global_batch_size=8, mesh=make_mesh(), seed=0)
  batch = next(iter(loader))
  source = data.DenseScenes(size=3, split="eval", image_size=272, max_large=1, max_small=2)
  assert batch["mask"].tolist() == [True] * 3 + [False] * 5
  for i in range(3):
    record = source[i]
    np.testing.assert_array_equal(batch["image"][i], record["image"])
    np.testing.assert_array_equal(batch["segmentation"][i], record["mask"])
    for key in ("boxes", "labels", "small"):
      np.testing.assert_array_equal(batch[key][i], record[key])
  assert batch["labels"][3].tolist() == [-1, -1, -1]  # The padding example has no object.
  boxes, valid = data.training_boxes(config, limit=5)
  assert boxes.shape == (5, 3, 4) and valid.shape == (5, 3)
  expected = np.stack([source_train["boxes"] for source_train in (
      data.DenseScenes(size=8, image_size=272, max_large=1, max_small=2).objects(i)
      for i in range(5))])  # Pixels of the 272 px images the source delivers.
  np.testing.assert_allclose(boxes, expected)
  with pytest.raises(ValueError, match="eval_image_size: expected 0 or image_size"):
    data.dataset_info({**config, "eval_image_size": 256})


def test_void_mask_values_are_accepted_and_other_out_of_range_values_refused():
  record = {"mask": np.zeros((8, 8), np.uint8), "boxes": np.zeros((1, 4), np.float32),
            "labels": np.full((1,), -1, np.int32), "small": np.zeros((1,), bool)}
  record["mask"][0, :] = dense_records.VOID
  record["mask"][1, :] = 3
  out = dense_records.targets(record, size=8, num_classes=3, index=0)
  np.testing.assert_array_equal(out["segmentation"], record["mask"])
  record["mask"][2, 2] = 4
  with pytest.raises(ValueError, match=r"dense record 0: expected mask values in \[0, 3\] "
                                       r"\(0 = background, k \+ 1 = class k\) or 255 \(void\)"):
    dense_records.targets(record, size=8, num_classes=3, index=0)
