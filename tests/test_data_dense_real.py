"""The real dense datasets (Cityscapes, VOC 2012): builders, preprocessing, loader, errors.

Every dataset is written by the test in the official on-disk layout (file names, folders,
archives, 8-bit label ids and 16-bit instance ids, palette PNGs, XML annotations), tiny (64x32
and 48x40 images, a few per split). Expected values are computed here from the scenes the test
drew: the official label id -> trainId table is restated as literals, boxes come from the
rectangles drawn, resized masks from PIL's own nearest-neighbour resize and images from the
plain whole-image resize (`transforms.resize_transform`).
"""

import io
import os
import subprocess
import sys
import tarfile
import zipfile

import jax
import numpy as np
from PIL import Image
import pytest

from saliency_jax import data
from saliency_jax.data import cityscapes
from saliency_jax.data import dense_records
from saliency_jax.data import dense_tfds
from saliency_jax.data import manual_files
from saliency_jax.data import transforms
from saliency_jax.data import voc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mesh():
  return jax.make_mesh((8,), ("data",))


def _numpy(batch):
  return {key: np.asarray(value) for key, value in batch.items()}


def _png(array, mode=None, palette=None) -> bytes:
  image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
  if palette is not None:
    image.putpalette(palette)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def _jpeg(array) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def _noise(seed, height, width):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(files, manual, *, archive, root, extracted):
  """`files` ({path under root: bytes}) as the archive, or extracted under manual/root."""
  manual.mkdir(parents=True, exist_ok=True)
  if extracted:
    for name, content in files.items():
      path = manual / root / name
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(content)
  elif archive.endswith(".zip"):
    with zipfile.ZipFile(manual / archive, "w") as zipped:
      zipped.writestr("README", b"The official zips hold a README and a license at the top.")
      for name, content in files.items():
        zipped.writestr(f"{root}/{name}", content)
  else:
    with tarfile.open(manual / archive, "w") as tarred:
      for name, content in files.items():
        info = tarfile.TarInfo(f"{root}/{name}")
        info.size = len(content)
        tarred.addfile(info, io.BytesIO(content))


def _expected_resize(mask, size):
  """PIL's nearest-neighbour resize to size x size (void, 255, stays void)."""
  return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


def _scaled(boxes, width, height, size):
  return np.asarray(boxes, np.float32).reshape(-1, 4) * np.array(
      [size / width, size / height] * 2, np.float32)


# ---------------------------------------------------------------------------------- Cityscapes

CS_W, CS_H = 64, 32
# The official table (cityscapesScripts labels.py) for the ids drawn here: label id -> trainId.
CS_TRAIN_ID = {7: 0, 8: 1, 11: 2, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 31: 16, 32: 17, 33: 18}
# Ids without a trainId: unlabeled, ego vehicle, static, caravan.
CS_VOID = (0, 1, 4, 29)

# Each scene: (split, city, file stem, [(label id, instance or None, (x0, y0, x1, y1)), ...])
# drawn in order over a fixed background (see `_cs_labels`). Instance None: a crowd region
# (the label id alone in gtFine_instanceIds, no box). Rectangles are pixel edges.
CS_SCENES = [
    ("train", "aachen", "aachen_000000_000019", [
        (26, 0, (2, 14, 26, 30)),     # A car: 24 x 16 -> 24 x 32 at 64 px: small.
        (33, 0, (28, 12, 64, 28)),    # A bicycle 36 x 16 -> 36 x 32: large.
        (26, None, (40, 2, 50, 8)),   # A crowd of cars: car pixels, no box.
        (29, 1, (52, 2, 60, 8)),      # A caravan: void, no box.
    ]),
    ("train", "aachen", "aachen_000001_000019", []),  # Stuff only: no object.
    ("train", "bochum", "bochum_000000_000313", [
        (24, 0, (4, 4, 8, 20)),
        (24, 1, (10, 4, 16, 12)),
        (24, 1, (10, 12, 12, 24)),   # The same person: an L shape, box (10, 4, 16, 24).
        (25, 0, (20, 6, 26, 22)),
        (27, 0, (30, 2, 62, 30)),
    ]),
    ("val", "frankfurt", "frankfurt_000000_000294", [
        (26, 3, (8, 16, 40, 32)),
        (32, 0, (44, 20, 52, 28)),
    ]),
    ("val", "frankfurt", "frankfurt_000000_000576", [
        (31, 0, (0, 0, 64, 32)),     # A train over the whole image.
    ]),
]
# The boxes and labels each scene must give, from the rectangles above.
CS_BOXES = {
    "aachen_000000_000019": ([(2, 14, 26, 30), (28, 12, 64, 28)], [13, 18]),
    "aachen_000001_000019": ([], []),
    "bochum_000000_000313": ([(4, 4, 8, 20), (10, 4, 16, 24), (20, 6, 26, 22), (30, 2, 62, 30)],
                             [11, 11, 12, 14]),
    "frankfurt_000000_000294": ([(8, 16, 40, 32), (44, 20, 52, 28)], [13, 17]),
    "frankfurt_000000_000576": ([(0, 0, 64, 32)], [16]),
}


def _cs_labels(objects):
  """`(labelIds uint8 [H, W], instanceIds uint16 [H, W])` of a scene."""
  label_ids = np.full((CS_H, CS_W), 23, np.uint8)  # Sky,
  label_ids[10:20] = 11  # building,
  label_ids[20:] = 7  # road,
  label_ids[20:24, 40:] = 8  # sidewalk,
  label_ids[0:4, 60:] = 0  # unlabeled,
  label_ids[28:, 0:4] = 1  # ego vehicle,
  label_ids[24:26, 30:34] = 4  # static.
  instance_ids = label_ids.astype(np.uint16)
  for label_id, instance, (x0, y0, x1, y1) in objects:
    label_ids[y0:y1, x0:x1] = label_id
    instance_ids[y0:y1, x0:x1] = label_id if instance is None else label_id * 1000 + instance
  return label_ids, instance_ids


def _cs_expected_mask(label_ids):
  """The prepared mask: trainId + 1, 255 on void, from the literal table."""
  mask = np.full(label_ids.shape, 255, np.uint8)
  for label_id, train_id in CS_TRAIN_ID.items():
    mask[label_ids == label_id] = train_id + 1
  assert set(np.unique(label_ids[mask == 255]).tolist()) <= set(CS_VOID)
  return mask


def write_cityscapes(manual, *, extracted=False):
  """The miniature manual directory; returns {stem: (image bytes, labelIds)}."""
  images, labels, scenes = {}, {}, {}
  for k, (split, city, stem, objects) in enumerate(CS_SCENES):
    image = _png(_noise(k, CS_H, CS_W))
    label_ids, instance_ids = _cs_labels(objects)
    images[f"{split}/{city}/{stem}_leftImg8bit.png"] = image
    labels[f"{split}/{city}/{stem}_gtFine_labelIds.png"] = _png(label_ids)
    labels[f"{split}/{city}/{stem}_gtFine_instanceIds.png"] = _png(instance_ids)
    # The other official gtFine files, which the builder does not read.
    labels[f"{split}/{city}/{stem}_gtFine_color.png"] = _png(_noise(k, CS_H, CS_W))
    labels[f"{split}/{city}/{stem}_gtFine_polygons.json"] = b"{}"
    scenes[stem] = (image, label_ids)
  # The test split's images (no public labels) are in the same zips and are not read.
  images["test/berlin/berlin_000000_000019_leftImg8bit.png"] = _png(_noise(9, CS_H, CS_W))
  _write(images, manual, archive=cityscapes.IMAGES_ARCHIVE, root="leftImg8bit",
         extracted=extracted)
  _write(labels, manual, archive=cityscapes.LABELS_ARCHIVE, root="gtFine", extracted=extracted)
  return scenes


@pytest.fixture(scope="module")
def cs_prepared(tmp_path_factory):
  """Cityscapes prepared from the zips: (data_dir, scenes)."""
  base = tmp_path_factory.mktemp("cityscapes")
  scenes = write_cityscapes(base / "manual")
  cityscapes.prepare(str(base / "tfds"), str(base / "manual"))
  return str(base / "tfds"), scenes


def _prepared_records(source):
  """{file stem: tfds record} of a prepared split."""
  records = {}
  for i in range(len(source.source)):
    record = source.source[i]
    records[record["image/filename"].decode().rsplit("_", 1)[0]] = record
  return records


def test_cityscapes_records_hold_the_train_ids_void_and_instance_boxes(cs_prepared):
  data_dir, scenes = cs_prepared
  seen = set()
  for split, count in (("train", 3), ("validation", 2)):
    source = cityscapes.cityscapes_source(split, data_dir=data_dir)
    assert len(source) == count and source.num_classes == 19
    for stem, record in _prepared_records(source).items():
      seen.add(stem)
      image, label_ids = scenes[stem]
      assert record["image"] == image  # The official PNG, unchanged.
      assert (record["width"], record["height"]) == (CS_W, CS_H)
      mask = transforms.decode_mask(record["mask"])
      np.testing.assert_array_equal(mask, _cs_expected_mask(label_ids))
      boxes, labels = CS_BOXES[stem]
      np.testing.assert_array_equal(record["boxes"], np.asarray(boxes, np.float32).reshape(-1, 4))
      assert record["labels"].tolist() == labels
  assert seen == set(CS_BOXES)
  # Known pixels, by name. Stuff: road, sidewalk, building, sky; void: ego vehicle, static,
  # unlabeled.
  records = _prepared_records(cityscapes.cityscapes_source("train", data_dir=data_dir))
  mask = transforms.decode_mask(records["aachen_000001_000019"]["mask"])
  assert (mask[31, 30], mask[21, 63], mask[15, 10], mask[0, 0]) == (1, 2, 3, 11)
  assert mask[30, 1] == mask[25, 31] == mask[1, 62] == 255
  # Things: a car, a bicycle, a crowd of cars (car pixels without a box); a caravan is void.
  mask = transforms.decode_mask(records["aachen_000000_000019"]["mask"])
  assert (mask[20, 10], mask[20, 40], mask[5, 45], mask[5, 55]) == (14, 19, 14, 255)


def test_cityscapes_from_extracted_folders_gives_the_same_records(cs_prepared, tmp_path):
  data_dir, _ = cs_prepared
  write_cityscapes(tmp_path / "manual", extracted=True)
  cityscapes.prepare(str(tmp_path / "tfds"), str(tmp_path / "manual"))
  for split in ("train", "validation"):
    ours = _prepared_records(cityscapes.cityscapes_source(split, data_dir=str(tmp_path / "tfds")))
    zipped = _prepared_records(cityscapes.cityscapes_source(split, data_dir=data_dir))
    assert sorted(ours) == sorted(zipped)
    for stem, record in ours.items():
      for key in ("image", "mask", "width", "height", "image/filename"):
        assert record[key] == zipped[stem][key]
      for key in ("boxes", "labels"):
        np.testing.assert_array_equal(record[key], zipped[stem][key])


def _identify(image, references):
  """Which reference (name -> unflipped image) `image` is, and whether it is flipped."""
  for name, reference in references.items():
    if np.array_equal(image, reference):
      return name, False
    if np.array_equal(image, reference[:, ::-1]):
      return name, True
  raise AssertionError("a batch image matches no record")


def test_cityscapes_loader_resizes_masks_and_boxes_for_both_splits(cs_prepared):
  data_dir, scenes = cs_prepared
  size = 64
  cfg = {"name": "cityscapes", "data_dir": data_dir, "image_size": size, "max_boxes": 4}
  assert data.dataset_info(cfg) == data.DatasetInfo(task="dense", num_outputs=19, train_size=3,
                                                    eval_size=2)
  references = {stem: transforms.resize_transform(image, size=size)
                for stem, (image, _) in scenes.items()}
  evaluation = data.make_loader(cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
  (batch,) = [_numpy(b) for b in evaluation]
  assert batch["mask"].tolist() == [True, True] + [False] * 6
  assert batch["segmentation"].shape == (8, size, size) and batch["boxes"].shape == (8, 4, 4)
  train = data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(), seed=3)
  train_batch = _numpy(next(iter(train)))
  assert train_batch["mask"].all()
  flips = []
  for current, count in ((batch, 2), (train_batch, 8)):
    for i in range(count):
      stem, flipped = _identify(current["image"][i], references)
      flips.append(flipped)
      expected = _expected_resize(_cs_expected_mask(scenes[stem][1]), size)
      boxes, labels = CS_BOXES[stem]
      boxes = _scaled(boxes, CS_W, CS_H, size)
      if flipped:
        expected = expected[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
      np.testing.assert_array_equal(current["segmentation"][i], expected)
      n = len(labels)
      np.testing.assert_array_equal(current["boxes"][i][:n], boxes)
      assert not current["boxes"][i][n:].any()
      assert current["labels"][i].tolist() == labels + [-1] * (4 - n)
      area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
      assert current["small"][i].tolist() == (area < 32 * 32).tolist() + [False] * (4 - n)
  assert not any(flips[:2])  # Evaluation never flips; training does, sometimes.
  assert any(flips[2:]) and not all(flips[2:])
  # The car of the first scene is small (24 x 32 px delivered), the bicycle (36 x 32) is not.
  stems = [_identify(image, references)[0] for image in train_batch["image"]]
  assert "aachen_000001_000019" in stems  # The image without objects trains too.
  row = stems.index("aachen_000000_000019")
  assert train_batch["small"][row].tolist() == [True, False, False, False]
  # Without hflip nothing is flipped.
  still = data.make_loader({**cfg, "hflip": False}, split="train", global_batch_size=8,
                           mesh=_mesh(), seed=3)
  assert not any(_identify(image, references)[1]
                 for image in _numpy(next(iter(still)))["image"])


def test_cityscapes_training_boxes_are_scaled_to_the_delivered_image(cs_prepared):
  data_dir, _ = cs_prepared
  cfg = {"name": "cityscapes", "data_dir": data_dir, "image_size": 64, "max_boxes": 4}
  boxes, valid = data.training_boxes(cfg, limit=3)
  records = _prepared_records(cityscapes.cityscapes_source("train", data_dir=data_dir))
  order = [r["image/filename"].decode().rsplit("_", 1)[0] for r in (
      cityscapes.cityscapes_source("train", data_dir=data_dir).source[i] for i in range(3))]
  assert sorted(order) == sorted(records)
  for i, stem in enumerate(order):
    expected, labels = CS_BOXES[stem]
    n = len(labels)
    assert valid[i].tolist() == [True] * n + [False] * (4 - n)
    np.testing.assert_allclose(
        boxes[i][:n], np.asarray(expected, np.float32).reshape(-1, 4)
        * 64 / np.array([CS_W, CS_H, CS_W, CS_H]))


def test_a_dense_model_trains_on_prepared_cityscapes(cs_prepared, tmp_path):
  from saliency_jax import train  # pylint: disable=import-outside-toplevel
  from tiny_experiments import load_config, tiny  # pylint: disable=import-outside-toplevel
  data_dir, _ = cs_prepared
  config = tiny(load_config("dense_scenes"), steps=2)
  config.data.name, config.data.data_dir, config.data.max_boxes = "cityscapes", data_dir, 4
  config.data.image_size = config.data.eval_resize = 64
  config.compare_with_uniform = False
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  evaluation = results["eval"]
  assert results["task"] == "segmentation" and evaluation["count"] == 2
  assert np.isfinite(evaluation["loss"]) and 0 <= evaluation["miou"] <= 1


# --------------------------------------------------------------------------------------- VOC

VOC_W, VOC_H = 48, 40
# VOC's class order: index in the 20 classes (box label), the mask holding index + 1.
VOC_CLASS = {"aeroplane": 0, "bird": 2, "car": 6, "cat": 7, "dog": 11, "person": 14, "train": 18}
# Each scene: (split, id, [(class name, (xmin, ymin, xmax, ymax) as in the XML: 1-based,
# inclusive), ...]); the mask fills each box's pixels with its class and rings it with void.
VOC_SCENES = [
    ("train", "2007_000032", [("aeroplane", (3, 5, 30, 20)), ("person", (34, 22, 44, 39))]),
    ("train", "2007_000039", [("cat", (10, 10, 18, 16))]),
    ("train", "2009_000001", []),  # No object: background and a void scribble only.
    ("val", "2007_000033", [("dog", (1, 1, 48, 40))]),  # The whole image.
    ("val", "2008_000002", [("car", (20, 30, 55, 40)), ("bird", (2, 2, 6, 6))]),  # Past the edge.
]
# The boxes (pixel edges, clipped to the image) and labels each scene must give.
VOC_BOXES = {
    "2007_000032": ([(2, 4, 30, 20), (33, 21, 44, 39)], [0, 14]),
    "2007_000039": ([(9, 9, 18, 16)], [7]),
    "2009_000001": ([], []),
    "2007_000033": ([(0, 0, 48, 40)], [11]),
    "2008_000002": ([(19, 29, 48, 40), (1, 1, 6, 6)], [6, 2]),
}
_VOC_PALETTE = [c for k in range(256) for c in ((k * 37) % 256, (k * 91) % 256, (k * 53) % 256)]


def _voc_mask(objects):
  """Palette indices: 0 background, class + 1 inside each box, 255 on a 1-pixel ring."""
  mask = np.zeros((VOC_H, VOC_W), np.uint8)
  mask[35:37, 2:9] = 255  # A void scribble, as VOC's "difficult" regions.
  for name, (x0, y0, x1, y1) in objects:
    mask[max(y0 - 2, 0):y1 + 1, max(x0 - 2, 0):x1 + 1] = 255
    mask[y0 - 1:y1, x0 - 1:x1] = VOC_CLASS[name] + 1
  return mask


def _voc_xml(image_id, objects):
  parts = [f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
           f"<size><width>{VOC_W}</width><height>{VOC_H}</height><depth>3</depth></size>"
           f"<segmented>1</segmented>"]
  for name, (x0, y0, x1, y1) in objects:
    parts.append(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                 f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                 f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>")
    if name == "person":  # Person layouts have part boxes, which are not objects.
      parts.append("<part><name>head</name><bndbox><xmin>35</xmin><ymin>23</ymin>"
                   "<xmax>38</xmax><ymax>26</ymax></bndbox></part>")
    parts.append("</object>")
  return ("".join(parts) + "</annotation>").encode()


def write_voc(manual, *, extracted=False):
  """The miniature manual directory; returns {id: (JPEG bytes, mask indices)}."""
  files, scenes, lists = {}, {}, {"train": [], "val": []}
  for k, (split, image_id, objects) in enumerate(VOC_SCENES):
    image = _jpeg(_noise(20 + k, VOC_H, VOC_W))
    mask = _voc_mask(objects)
    files[f"JPEGImages/{image_id}.jpg"] = image
    files[f"Annotations/{image_id}.xml"] = _voc_xml(image_id, objects)
    files[f"SegmentationClass/{image_id}.png"] = _png(mask, "P", _VOC_PALETTE)
    files[f"SegmentationObject/{image_id}.png"] = _png(mask, "P", _VOC_PALETTE)
    lists[split].append(image_id)
    scenes[image_id] = (image, mask)
  # A detection-only image (in no segmentation list) is not read.
  files["JPEGImages/2012_004331.jpg"] = _jpeg(_noise(30, VOC_H, VOC_W))
  files["Annotations/2012_004331.xml"] = _voc_xml("2012_004331", [("cat", (1, 1, 5, 5))])
  for split, ids in lists.items():
    files[f"ImageSets/Segmentation/{split}.txt"] = ("\n".join(ids) + "\n").encode()
  files["ImageSets/Segmentation/trainval.txt"] = "\n".join(sum(lists.values(), [])).encode()
  files["ImageSets/Main/train.txt"] = b"2012_004331\n"
  _write(files, manual, archive=voc.ARCHIVE, root="VOCdevkit/VOC2012", extracted=extracted)
  return scenes


@pytest.fixture
def voc_official_size(monkeypatch):
  """The miniature tar stands in for the official one: its size is the expected size."""
  def official(manual):
    path = manual / voc.ARCHIVE
    monkeypatch.setattr(voc, "OFFICIAL_SIZES", {voc.ARCHIVE: os.path.getsize(path)})
  return official


@pytest.fixture(scope="module")
def voc_prepared(tmp_path_factory):
  base = tmp_path_factory.mktemp("voc")
  scenes = write_voc(base / "manual")
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(voc, "OFFICIAL_SIZES",
                  {voc.ARCHIVE: os.path.getsize(base / "manual" / voc.ARCHIVE)})
    voc.prepare(str(base / "tfds"), str(base / "manual"))
  return str(base / "tfds"), scenes


def _voc_records(source):
  return {source.source[i]["image/filename"].decode()[:-4]: source.source[i]
          for i in range(len(source.source))}


def test_voc_records_hold_the_palette_indices_void_and_xml_boxes(voc_prepared):
  data_dir, scenes = voc_prepared
  seen = set()
  for split, count in (("train", 3), ("validation", 2)):
    source = voc.voc_source(split, data_dir=data_dir)
    assert len(source) == count and source.num_classes == 20
    for image_id, record in _voc_records(source).items():
      seen.add(image_id)
      image, mask = scenes[image_id]
      assert record["image"] == image  # The official JPEG, unchanged.
      assert (record["width"], record["height"]) == (VOC_W, VOC_H)
      np.testing.assert_array_equal(transforms.decode_mask(record["mask"]), mask)
      boxes, labels = VOC_BOXES[image_id]
      np.testing.assert_array_equal(record["boxes"], np.asarray(boxes, np.float32).reshape(-1, 4))
      assert record["labels"].tolist() == labels
  assert seen == set(VOC_BOXES)


def test_voc_from_the_extracted_folder_gives_the_same_records(voc_prepared, tmp_path):
  data_dir, _ = voc_prepared
  write_voc(tmp_path / "manual", extracted=True)
  voc.prepare(str(tmp_path / "tfds"), str(tmp_path / "manual"))
  for split in ("train", "validation"):
    ours = _voc_records(voc.voc_source(split, data_dir=str(tmp_path / "tfds")))
    tarred = _voc_records(voc.voc_source(split, data_dir=data_dir))
    assert sorted(ours) == sorted(tarred)
    for image_id, record in ours.items():
      assert record["image"] == tarred[image_id]["image"]
      assert record["mask"] == tarred[image_id]["mask"]
      np.testing.assert_array_equal(record["boxes"], tarred[image_id]["boxes"])


def test_voc_loader_batches_for_both_splits(voc_prepared):
  data_dir, scenes = voc_prepared
  size = 32
  cfg = {"name": "voc2012", "data_dir": data_dir, "image_size": size, "max_boxes": 3}
  assert data.dataset_info(cfg) == data.DatasetInfo(task="dense", num_outputs=20, train_size=3,
                                                    eval_size=2)
  references = {image_id: transforms.resize_transform(image, size=size)
                for image_id, (image, _) in scenes.items()}
  for split, count in (("eval", 2), ("train", 8)):
    loader = data.make_loader(cfg, split=split, global_batch_size=8, mesh=_mesh(), seed=1)
    batch = _numpy(next(iter(loader)))
    assert batch["mask"].sum() == count
    for i in range(count):
      image_id, flipped = _identify(batch["image"][i], references)
      expected = _expected_resize(scenes[image_id][1], size)
      boxes, labels = VOC_BOXES[image_id]
      boxes = _scaled(boxes, VOC_W, VOC_H, size)
      if flipped:
        expected = expected[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
      np.testing.assert_array_equal(batch["segmentation"][i], expected)
      np.testing.assert_allclose(batch["boxes"][i][:len(labels)], boxes, atol=1e-5)
      assert batch["labels"][i].tolist() == labels + [-1] * (3 - len(labels))
      # Every object is small at 32 px (at most 32 x 32 = the threshold, not below: the
      # whole-image dog is not small).
      assert batch["small"][i][:len(labels)].tolist() == [
          (b[2] - b[0]) * (b[3] - b[1]) < 32 * 32 for b in boxes]


# ------------------------------------------------------------------- preprocessing, unit level


def _raw(mask, boxes, labels, image=None):
  height, width = mask.shape
  return {"image": image if image is not None else _noise(5, height, width),
          "mask": mask, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
          "labels": np.asarray(labels, np.int32)}


def test_dense_transform_nearest_mask_scaled_clipped_boxes_and_void():
  mask = np.zeros((30, 60), np.uint8)
  mask[0:10, 0:20] = 3
  mask[10:30, 40:60] = 255
  mask[20:30, 0:6] = 1
  record = _raw(mask, [[0, 0, 20, 10], [50, 25, 70, 40], [0, 0, 0, 0]], [2, 0, -1])
  out = transforms.dense_transform(record, size=12)
  np.testing.assert_array_equal(out["mask"], _expected_resize(mask, 12))
  assert out["mask"][0, 0] == 3 and out["mask"][11, 11] == 255  # Void stays void.
  # x scaled by 12 / 60, y by 12 / 30; the second box (past the image) clipped to it.
  np.testing.assert_allclose(out["boxes"], [[0, 0, 4, 4], [10, 10, 12, 12], [0, 0, 0, 0]])
  assert out["labels"].tolist() == [2, 0, -1] and out["small"].tolist() == [True, True, False]
  np.testing.assert_array_equal(out["image"],
                                transforms.resize_transform(record["image"], size=12))
  targets = dense_records.targets(out, size=12, num_classes=3, index=0)
  assert targets["segmentation"].shape == (12, 12)
  # An image as large as the threshold's side keeps its large objects large.
  big = transforms.dense_transform(_raw(mask, [[0, 0, 60, 30]], [1]), size=64)
  assert big["small"].tolist() == [False]


def test_dense_transform_flips_image_mask_and_boxes_together():
  mask = np.zeros((16, 32), np.uint8)
  mask[2:6, 1:9] = 2
  record = _raw(mask, [[1, 2, 9, 6], [0, 0, 0, 0]], [1, -1])
  plain = transforms.dense_transform(record, size=16)
  seeds = {}
  for seed in range(16):
    draw = np.random.default_rng(seed).random()
    seeds.setdefault(draw < 0.5, seed)
  flipped = transforms.dense_transform(record, size=16, rng=np.random.default_rng(seeds[True]),
                                       flip=True)
  kept = transforms.dense_transform(record, size=16, rng=np.random.default_rng(seeds[False]),
                                    flip=True)
  np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])
  np.testing.assert_array_equal(flipped["mask"], plain["mask"][:, ::-1])
  np.testing.assert_allclose(flipped["boxes"], [[11.5, 2, 15.5, 6], [0, 0, 0, 0]])
  rows, cols = np.nonzero(flipped["mask"])
  assert (cols.min(), cols.max() + 1) == (12, 16)  # The mask's object sits in its flipped box.
  for key in ("image", "mask", "boxes"):
    np.testing.assert_array_equal(kept[key], plain[key])
  # No generator (evaluation): never flipped.
  np.testing.assert_array_equal(transforms.dense_transform(record, size=16, flip=True)["image"],
                                plain["image"])


def test_dense_transform_refuses_a_mask_of_another_size():
  record = _raw(np.zeros((8, 8), np.uint8), [], [])
  record["image"] = _noise(1, 8, 9)
  with pytest.raises(transforms.BadImageError, match="expected a mask of the image's size 8x9"):
    transforms.dense_transform(record, size=8)
  record = _raw(np.zeros((8, 8), np.uint8), [], [])
  record["mask"] = _png(_noise(1, 8, 8))
  with pytest.raises(transforms.BadImageError, match="one-channel mask"):
    transforms.dense_transform(record, size=8)


def test_the_source_pads_and_keeps_the_largest_boxes():
  boxes = np.array([[0, 0, 2, 2], [0, 0, 10, 10], [0, 0, 5, 5]], np.float32)
  records = [{"image": b"", "mask": b"", "boxes": boxes, "labels": np.array([1, 2, 3], np.int32),
              "width": 10, "height": 10},
             {"image": b"", "mask": b"", "boxes": np.zeros((0, 4), np.float32),
              "labels": np.zeros((0,), np.int32), "width": 10, "height": 10}]
  two = dense_tfds.DenseTfdsSource(records, num_classes=4, max_boxes=2)
  np.testing.assert_array_equal(two[0]["boxes"], boxes[1:])
  assert two[0]["labels"].tolist() == [2, 3]
  four = dense_tfds.DenseTfdsSource(records, num_classes=4, max_boxes=4)
  assert four[0]["labels"].tolist() == [1, 2, 3, -1]
  assert four[1]["labels"].tolist() == [-1] * 4 and not four[1]["boxes"].any()


# ------------------------------------------------------------------------------------- errors


def test_unprepared_datasets_name_the_prepare_command(tmp_path):
  for name in ("cityscapes", "voc2012"):
    with pytest.raises(FileNotFoundError,
                       match=f"python -m saliency_jax.data.prepare --dataset={name} "):
      data.dataset_info({"name": name, "data_dir": str(tmp_path)})


def _refused(prepare, tmp_path, manual, message):
  data_dir = tmp_path / "tfds"
  with pytest.raises(manual_files.ManualDirError, match=message) as error:
    prepare(str(data_dir), str(manual))
  assert not data_dir.exists()  # Nothing written.
  assert "\n" not in str(error.value)  # One sentence.


def test_cityscapes_problems_stop_before_anything_is_written(tmp_path):
  manual = tmp_path / "manual"
  _refused(cityscapes.prepare, tmp_path, manual, "expected the manual download directory")
  write_cityscapes(manual)
  labels = manual / cityscapes.LABELS_ARCHIVE
  content = labels.read_bytes()
  labels.unlink()
  _refused(cityscapes.prepare, tmp_path, manual,
           "expected .*gtFine_trainvaltest.zip or its extracted folder .*gtFine/ .* found neither")
  labels.write_bytes(content[:len(content) // 2])  # An interrupted download.
  _refused(cityscapes.prepare, tmp_path, manual,
           "expected a complete zip archive, found .* bytes .* truncated")
  # An incomplete extraction: a label file, then an image, missing.
  extracted = tmp_path / "extracted"
  write_cityscapes(extracted, extracted=True)
  missing = extracted / "gtFine/train/bochum/bochum_000000_000313_gtFine_instanceIds.png"
  missing.unlink()
  _refused(cityscapes.prepare, tmp_path, extracted,
           "expected the labelIds and instanceIds files of the 3 train images .* found 1 "
           "missing .*bochum_000000_000313_gtFine_instanceIds.png.* extraction is incomplete")
  write_cityscapes(extracted, extracted=True)
  (extracted / "leftImg8bit/val/frankfurt/frankfurt_000000_000576_leftImg8bit.png").unlink()
  _refused(cityscapes.prepare, tmp_path, extracted,
           "expected an image for each of the val label files, found 1 without one")


def test_voc_problems_stop_before_anything_is_written(tmp_path, voc_official_size):
  manual = tmp_path / "manual"
  write_voc(manual)
  voc_official_size(manual)
  archive = manual / voc.ARCHIVE
  content = archive.read_bytes()
  archive.write_bytes(content[:len(content) * 2 // 3])
  _refused(voc.prepare, tmp_path, manual,
           r"expected the official [\d,]+ bytes, found [\d,]+: the download is incomplete")
  # Not of the official size (e.g. unknown) but cut off: the tar's own structure tells.
  for cut in (len(content) * 2 // 3, len(content) - 20 * 512, 1536):
    archive.write_bytes(content[:cut])
    voc_official_size(manual)
    _refused(voc.prepare, tmp_path, manual, "truncated")
  archive.unlink()
  _refused(voc.prepare, tmp_path, manual,
           "expected .*VOCtrainval_11-May-2012.tar or its extracted folder .*VOC2012/ .* "
           "found neither")
  write_voc(manual, extracted=True)
  (manual / "VOCdevkit/VOC2012/SegmentationClass/2008_000002.png").unlink()
  _refused(voc.prepare, tmp_path, manual,
           "expected the image, annotation and mask of the 2 images of "
           "ImageSets/Segmentation/val.txt .* found 1 files missing .*2008_000002.png.* "
           "extraction is incomplete")
  (manual / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt").unlink()
  _refused(voc.prepare, tmp_path, manual, "expected .*ImageSets/Segmentation/train.txt")


def test_prepare_command_reports_the_problem_and_exits(tmp_path):
  done = subprocess.run(
      [sys.executable, "-m", "saliency_jax.data.prepare", "--dataset=voc2012",
       f"--data_dir={tmp_path / 'tfds'}", f"--manual_dir={tmp_path / 'nowhere'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 1
  assert "error: VOC 2012: expected the manual download directory" in done.stderr
  assert not (tmp_path / "tfds").exists()
