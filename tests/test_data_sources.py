"""Dataset sources: image folders, CUB (tfds mock), the iNaturalist builder, GazeCapture.

Every dataset is written by the test itself (no downloads). Expected images are computed
directly with PIL/NumPy from the files the test wrote; expected labels come from the layout.
"""

import io
import json
import logging
import os
import tarfile
import zipfile

import jax
import numpy as np
from PIL import Image
import pytest

from saliency_jax import data
from saliency_jax.data import inaturalist
from saliency_jax.data import transforms

tfds = pytest.importorskip("tensorflow_datasets")


def _mesh():
  return jax.make_mesh((8,), ("data",))


def _jpeg(array, **kwargs) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="JPEG", **kwargs)
  return buffer.getvalue()


def _image(seed, height=40, width=48):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _numpy(batch):
  return {key: np.asarray(value) for key, value in batch.items()}


# --------------------------------------------------------------------------------- image folder


@pytest.fixture
def image_folder(tmp_path):
  """train/{bird,cat,empty}, val/{bird,cat}, with every kind of awkward file."""
  root = tmp_path / "images"
  for split, classes in {"train": ("bird", "cat", "empty"), "val": ("bird", "cat")}.items():
    for name in classes:
      (root / split / name).mkdir(parents=True)
  Image.fromarray(_image(0)).save(root / "train/bird/rgb.jpg")
  Image.fromarray(_image(1)[..., 0], "L").save(root / "train/bird/gray.png")
  Image.fromarray(np.dstack([_image(2), np.full((40, 48), 200, np.uint8)]), "RGBA").save(
      root / "train/bird/rgba.png")
  Image.fromarray(np.full((40, 48), 40000, np.uint16)).save(root / "train/cat/sixteen.png")
  Image.fromarray(np.zeros((40, 48, 4), np.uint8), "CMYK").save(root / "train/cat/cmyk.jpg")
  Image.fromarray(_image(3, 3, 5)).save(root / "train/cat/tiny.png")  # Smaller than the crop.
  (root / "train/cat/sub").mkdir()
  Image.fromarray(_image(4)).save(root / "train/cat/sub/nested.jpg")
  (root / "train/cat/notes.txt").write_text("not an image")
  Image.fromarray(_image(5)).save(root / "val/bird/a.png")
  (root / "val/bird/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
  Image.fromarray(_image(6)).save(root / "val/cat/b.png")
  truncated = _jpeg(_image(7, 64, 64))
  (root / "val/cat/truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
  return root


def test_image_folder_listing(image_folder, caplog):
  with caplog.at_level(logging.WARNING, logger="saliency_jax.data"):
    train = data.ImageFolderSource.from_folder(str(image_folder), "train")
  assert train.class_names == ("bird", "cat", "empty")
  assert "empty" in caplog.text  # An empty class folder is reported, its index kept.
  names = [os.path.relpath(p, image_folder) for p in train.paths]
  assert names == ["train/bird/gray.png", "train/bird/rgb.jpg", "train/bird/rgba.png",
                   "train/cat/cmyk.jpg", "train/cat/sixteen.png", "train/cat/sub/nested.jpg",
                   "train/cat/tiny.png"]
  assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
  assert data.dataset_info({"name": "image_folder", "data_dir": str(image_folder)}) == (
      data.DatasetInfo(task="classification", num_outputs=3, train_size=7, eval_size=4))


def test_image_folder_training_decodes_every_convertible_file(image_folder):
  cfg = {"name": "image_folder", "data_dir": str(image_folder), "image_size": 24}
  loader = data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(), seed=0)
  batches = [_numpy(b) for b, _ in zip(loader, range(2))]
  for batch in batches:
    assert batch["image"].shape == (8, 24, 24, 3) and batch["mask"].all()
  assert loader.num_skipped == 0
  labels = np.concatenate([b["label"] for b in batches])[:7]
  assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 1]  # The first epoch, each file once.


def test_image_folder_eval_masks_corrupt_and_truncated_files(image_folder):
  cfg = {"name": "image_folder", "data_dir": str(image_folder), "image_size": 24,
         "eval_resize": 32}
  loader = data.make_loader(cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
  (batch,) = [_numpy(b) for b in loader]
  # val/bird/a.png, val/bird/corrupt.jpg, val/cat/b.png, val/cat/truncated.jpg, then padding.
  assert batch["mask"].tolist() == [True, False, True, False] + [False] * 4
  assert batch["label"][[0, 2]].tolist() == [0, 1]
  assert loader.num_skipped == 2
  expected = transforms.eval_transform(str(image_folder / "val/cat/b.png"), size=24, resize=32)
  np.testing.assert_array_equal(batch["image"][2], expected)


def test_image_folder_errors(tmp_path, image_folder):
  with pytest.raises(FileNotFoundError, match="train"):
    data.ImageFolderSource.from_folder(str(tmp_path / "nowhere"), "train")
  (image_folder / "val" / "dog").mkdir()
  with pytest.raises(FileNotFoundError, match="dog"):
    data.ImageFolderSource.from_folder(str(image_folder), "val")
  with pytest.raises(FileNotFoundError, match="test"):
    data.ImageFolderSource.from_folder(str(image_folder), "test")
  with pytest.raises(ValueError, match="data.data_dir"):
    data.dataset_info({"name": "image_folder"})


# ------------------------------------------------------------------------------------------ CUB


def _cub_records(count):
  records = []
  for i in range(count):
    image = _jpeg(_image(10 + i, 30 + i, 50))
    if i == 2:
      image = b"corrupt bytes"
    records.append({"image": image, "label": (7 * i) % 200, "label_name": "x",
                    "image/filename": f"{i}.jpg", "bbox": np.zeros(4, np.float32),
                    "segmentation_mask": b""})
  return records


def test_cub_through_tfds_mock(tmp_path):
  records = {"train": _cub_records(6), "test": _cub_records(5)}
  requested = []

  def as_data_source(self, split, decoders=None, **kwargs):
    del self, kwargs
    requested.append((split, sorted(decoders)))
    return records[split]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    cfg = {"name": "cub", "data_dir": str(tmp_path), "image_size": 16, "eval_resize": 20}
    info = data.dataset_info(cfg)
    loader = data.make_loader(cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
    (batch,) = [_numpy(b) for b in loader]
    train = data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(), seed=0)
    train_batch = _numpy(next(iter(train)))
  assert info == data.DatasetInfo(task="classification", num_outputs=200, train_size=6,
                                  eval_size=5)
  # Image features are read as bytes (decoded by our decoder, not by tfds).
  assert ("test", ["image", "segmentation_mask"]) in requested
  assert batch["mask"].tolist() == [True, True, False, True, True, False, False, False]
  assert batch["label"][:5].tolist() == [0, 7, 0, 21, 28]
  for i in (0, 1, 3, 4):
    expected = transforms.eval_transform(records["test"][i]["image"], size=16, resize=20)
    np.testing.assert_array_equal(batch["image"][i], expected)
  assert train_batch["mask"].all() and train.num_skipped >= 1
  assert set(train_batch["label"].tolist()) <= {0, 7, 21, 28, 35}


# ---------------------------------------------------------------------------------- iNaturalist


def _write_inat_manual_dir(manual, extracted=False):
  """A miniature of the official files: 3 classes, 5 train and 3 validation images."""
  manual.mkdir(parents=True)
  categories = [{"id": k, "name": f"species {k}", "supercategory": "Plantae"} for k in range(3)]
  files, annotations = {}, {"train": [], "validation": []}
  image_id = 0
  for split, count in (("train", 5), ("validation", 3)):
    images, annos = [], []
    for i in range(count):
      label = (i + image_id) % 3
      name = f"train_val_images/Plantae/species {label}/{split}{i:03d}hash.jpg"
      files[name] = _jpeg(_image(100 + image_id, 20 + i, 30))
      images.append({"id": image_id, "file_name": name, "width": 30, "height": 20 + i})
      annos.append({"id": 1000 + image_id, "image_id": image_id, "category_id": label})
      annotations[split].append((name, label))
      image_id += 1
    payload = json.dumps({"images": images, "annotations": annos, "categories": categories})
    with zipfile.ZipFile(manual / inaturalist.ANNOTATIONS_ARCHIVE, "a") as archive:
      archive.writestr(f"train_val2017/{inaturalist.ANNOTATION_FILES[split]}", payload)
  if extracted:
    for name, content in files.items():
      path = manual / name
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(content)
  else:
    with tarfile.open(manual / inaturalist.IMAGES_ARCHIVE, "w:gz") as archive:
      for name, content in files.items():
        info = tarfile.TarInfo(name)
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
  return files, annotations


def _official_sizes_of(manual):
  return {name: os.path.getsize(manual / name)
          for name in (inaturalist.IMAGES_ARCHIVE, inaturalist.ANNOTATIONS_ARCHIVE)
          if (manual / name).exists()}


@pytest.mark.parametrize("extracted", [False, True])
def test_inaturalist_builder_prepares_and_loads(tmp_path, monkeypatch, extracted):
  manual = tmp_path / "manual"
  files, annotations = _write_inat_manual_dir(manual, extracted=extracted)
  # The miniature files stand in for the official ones: their sizes are the expected sizes.
  monkeypatch.setattr(inaturalist, "OFFICIAL_SIZES", _official_sizes_of(manual))
  data_dir = str(tmp_path / "tfds")
  inaturalist.prepare(data_dir, str(manual))
  cfg = {"name": "inaturalist2017", "data_dir": data_dir, "image_size": 16, "eval_resize": 16}
  assert data.dataset_info(cfg) == data.DatasetInfo(
      task="classification", num_outputs=5089, train_size=5, eval_size=3)
  loader = data.make_loader(cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
  (batch,) = [_numpy(b) for b in loader]
  assert batch["mask"].sum() == 3
  # tfds stores examples in its own (hashed) order; match them by content.
  expected = {}
  for name, label in annotations["validation"]:
    image = transforms.eval_transform(files[name], size=16, resize=16)
    expected[image.tobytes()] = label
  for i in range(3):
    assert expected[batch["image"][i].tobytes()] == batch["label"][i]


def test_inaturalist_manual_dir_problems_stop_before_preparing(tmp_path, monkeypatch):
  manual = tmp_path / "manual"
  with pytest.raises(inaturalist.ManualDirError, match="does not exist"):
    inaturalist.locate_manual_files(str(manual))
  _write_inat_manual_dir(manual)
  sizes = _official_sizes_of(manual)
  monkeypatch.setattr(inaturalist, "OFFICIAL_SIZES", sizes)
  assert set(inaturalist.locate_manual_files(str(manual))) == {"images", "train", "validation"}
  # An interrupted download: the archive is shorter than the official file.
  monkeypatch.setattr(inaturalist, "OFFICIAL_SIZES",
                      {**sizes, inaturalist.IMAGES_ARCHIVE: sizes[inaturalist.IMAGES_ARCHIVE] + 1})
  with pytest.raises(inaturalist.ManualDirError, match="incomplete"):
    inaturalist.prepare(str(tmp_path / "tfds"), str(manual))
  assert not (tmp_path / "tfds").exists()
  monkeypatch.setattr(inaturalist, "OFFICIAL_SIZES", sizes)
  (manual / inaturalist.ANNOTATIONS_ARCHIVE).unlink()
  with pytest.raises(inaturalist.ManualDirError, match="train, validation"):
    inaturalist.locate_manual_files(str(manual))


def test_inaturalist_incomplete_extraction_is_reported(tmp_path, monkeypatch):
  manual = tmp_path / "manual"
  files, _ = _write_inat_manual_dir(manual, extracted=True)
  monkeypatch.setattr(inaturalist, "OFFICIAL_SIZES", _official_sizes_of(manual))
  (manual / next(iter(files))).unlink()
  with pytest.raises(inaturalist.ManualDirError, match="extraction is incomplete"):
    inaturalist.prepare(str(tmp_path / "tfds"), str(manual))


def test_inaturalist_through_tfds_mock():
  def as_data_source(self, split, decoders=None, **kwargs):
    del self, kwargs
    assert sorted(decoders) == ["image"]
    return [{"image": _jpeg(_image(i)), "label": 5088 - i, "image/filename": "x"}
            for i in range(3 if split == "validation" else 4)]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    cfg = {"name": "inaturalist2017", "image_size": 16}
    assert data.dataset_info(cfg).train_size == 4
    loader = data.make_loader(cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
    (batch,) = [_numpy(b) for b in loader]
  assert batch["label"][:3].tolist() == [5088, 5087, 5086]


# ---------------------------------------------------------------------------------- GazeCapture


def _write_recording(root, number, split, frames, valid, device="iPhone 6"):
  folder = root / f"{number:05d}"
  (folder / "frames").mkdir(parents=True)
  n = len(frames)
  for i, array in enumerate(frames):
    Image.fromarray(array).save(folder / "frames" / f"{i:05d}.jpg", quality=98)
  box = {"X": [10.7] * n, "Y": [5.2] * n, "W": [20.0] * n, "H": [20.0] * n, "IsValid": valid}
  eye = {"X": [1.0] * n, "Y": [1.0] * n, "W": [5.0] * n, "H": [5.0] * n, "IsValid": [1] * n}
  metadata = {
      "appleFace": box, "appleLeftEye": eye, "appleRightEye": eye,
      "faceGrid": {"X": [1] * n, "Y": [1] * n, "W": [5] * n, "H": [5] * n, "IsValid": [1] * n},
      "dotInfo": {"DotNum": list(range(n)), "XPts": [0] * n, "YPts": [0] * n,
                  "XCam": [float(i) + number for i in range(n)],
                  "YCam": [-2.5 * i for i in range(n)], "Time": [0.0] * n},
      "frames": [f"{i:05d}.jpg" for i in range(n)],
      "info": {"TotalFrames": n, "NumFaceDetections": sum(valid), "NumEyeDetections": n,
               "Dataset": split, "DeviceName": device},
  }
  for name, value in metadata.items():
    (folder / f"{name}.json").write_text(json.dumps(value))
  return folder


def test_gazecapture_from_official_layout(tmp_path, caplog):
  root = tmp_path / "GazeCapture"
  frames = [_image(200 + i, 48, 64) for i in range(3)]
  _write_recording(root, 2, "train", frames, valid=[1, 0, 1])
  _write_recording(root, 5, "test", frames[:2], valid=[1, 1], device="iPad Air 2")
  broken = _write_recording(root, 9, "train", frames[:1], valid=[1])
  (broken / "dotInfo.json").unlink()
  with caplog.at_level(logging.WARNING, logger="saliency_jax.data"):
    train = data.make_source(data.parse_data_config(
        {"name": "gazecapture", "data_dir": str(root)}), "train")
  assert "skipped 1 of 3 recordings" in caplog.text
  assert len(train) == 2  # Frames 0 and 2 of recording 2; frame 1 has no face detection.
  record = train[1]
  np.testing.assert_array_equal(record["label"], [2.0 + 2, -5.0])
  # Face box: X, Y, W, H = 10.7, 5.2, 20, 20 truncated to ints and widened by one pixel.
  decoded = transforms.decode_image(str(root / "00002/frames/00002.jpg"))
  np.testing.assert_array_equal(np.asarray(record["image"]), decoded[4:4 + 21, 9:9 + 21])
  info = data.dataset_info({"name": "gazecapture", "data_dir": str(root)})
  assert info == data.DatasetInfo(task="regression", num_outputs=2, train_size=2, eval_size=2)

  cfg = {"name": "gazecapture", "data_dir": str(root), "image_size": 16}
  loader = data.make_loader(cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
  (batch,) = [_numpy(b) for b in loader]
  assert batch["label"].dtype == np.float32 and batch["label"].shape == (8, 2)
  np.testing.assert_array_equal(batch["label"][:2], [[5.0, 0.0], [6.0, -2.5]])
  assert batch["mask"].tolist() == [True, True] + [False] * 6
  face = transforms.decode_image(str(root / "00005/frames/00001.jpg"))[4:25, 9:30]
  np.testing.assert_array_equal(batch["image"][1], transforms.resize_transform(face, size=16))

  frame_cfg = {**cfg, "gaze_input": "frame"}
  (frame_batch,) = [_numpy(b) for b in data.make_loader(
      frame_cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)]
  whole = transforms.decode_image(str(root / "00005/frames/00000.jpg"))
  np.testing.assert_array_equal(frame_batch["image"][0],
                                transforms.resize_transform(whole, size=16))


def test_gazecapture_face_box_outside_the_frame_is_black(tmp_path):
  root = tmp_path / "gc"
  folder = _write_recording(root, 3, "train", [_image(1, 48, 64)], valid=[1])
  face = json.loads((folder / "appleFace.json").read_text())
  face.update(X=[-5.0], Y=[40.0], W=[12.0], H=[12.0])
  (folder / "appleFace.json").write_text(json.dumps(face))
  source = data.make_source(data.parse_data_config(
      {"name": "gazecapture", "data_dir": str(root)}), "train")
  crop = np.asarray(source[0]["image"])
  # Box x in [-6, 7), y in [39, 52): columns < 0 and rows >= 48 lie outside the frame.
  assert crop.shape == (13, 13, 3)
  assert not crop[:, :6].any() and not crop[9:].any()
  decoded = transforms.decode_image(str(folder / "frames/00000.jpg"))
  np.testing.assert_array_equal(crop[:9, 6:], decoded[39:48, 0:7])


def test_gazecapture_missing_data_says_how_to_extract(tmp_path):
  (tmp_path / "00001.tar.gz").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="unextracted archives"):
    data.dataset_info({"name": "gazecapture", "data_dir": str(tmp_path)})
