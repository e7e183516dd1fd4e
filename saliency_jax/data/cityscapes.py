"""Cityscapes (fine annotations) for the dense model, through a tfds builder of this project.

Our own builder: the catalogue's `cityscapes` needs TensorFlow and drops the instance ids (boxes).

Cityscapes is a manual download (registration at https://www.cityscapes-dataset.com). Put into
the manual directory `leftImg8bit_trainvaltest.zip` (11 GB) and `gtFine_trainvaltest.zip`
(241 MB), or the folders `leftImg8bit/` and `gtFine/` they extract to (either of each pair), as
the files come:

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      (8-bit label ids)
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png   (16-bit)

then, once (no TensorFlow needed):

    python -m saliency_jax.data.prepare --dataset=cityscapes --data_dir=DIR --manual_dir=MANUAL_DIR

Splits: "train" (2,975 images) and "validation" (500, the official val; the test split has no
public labels). Every image is 2048x1024; the loader resizes it whole to the square
`data.image_size` (`transforms.dense_transform`).

Values (the official `labels.py` table, `LABEL_TO_TRAIN`): the 19 evaluation classes are the
trainIds 0..18 (road .. bicycle, `CLASS_NAMES`); the mask holds trainId + 1, and 255
(`dense_records.VOID`) on every label id without a trainId (unlabelled, ego vehicle,
rectification border, out of roi, static, dynamic, ground, parking, rail track, guard rail,
bridge, tunnel, polegroup, caravan, trailer), which the loss and the metrics leave out: no pixel
is background (0), so the 19 classes are all that is scored, as in the official mIoU. Boxes are the tight boxes of the instances of `gtFine_instanceIds`
(value `label_id * 1000 + instance`) whose label has a trainId: person, rider, car, truck, bus,
train, motorcycle, bicycle (labels 11..18); crowd regions (a thing's label id without an
instance, < 1000) and caravans and trailers get no box. A missing file, a truncated archive or
an extraction lacking files stops the preparation before it writes anything.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from saliency_jax.data import dense_records
from saliency_jax.data import dense_tfds
from saliency_jax.data import manual_files

TFDS_NAME = "cityscapes_dense"
HOMEPAGE = "https://www.cityscapes-dataset.com"
IMAGES_ARCHIVE, IMAGES_FOLDER = "leftImg8bit_trainvaltest.zip", "leftImg8bit"
LABELS_ARCHIVE, LABELS_FOLDER = "gtFine_trainvaltest.zip", "gtFine"
# tfds split -> the official folder.
SPLITS = {"train": "train", "validation": "val"}
OFFICIAL_COUNTS = {"train": 2975, "validation": 500}
# Boxes per record: room for crowded street scenes (not counted on the full dataset here; an
# image with more keeps its largest, see `dense_tfds`).
MAX_BOXES = 128
CLASS_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
               "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
               "bus", "train", "motorcycle", "bicycle")
NUM_CLASSES = len(CLASS_NAMES)
# label id -> trainId, for the label ids that have one (every other id is void).
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                  24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# The label ids of the classes with instances that have a trainId.
THING_LABELS = (24, 25, 26, 27, 28, 31, 32, 33)
_IMAGE_NAME = re.compile(r"^([^/]+)/([^/]+)/(([a-z\-]+)_(\d+)_(\d+))_leftImg8bit\.png$")

INSTRUCTIONS = (f"Download {IMAGES_ARCHIVE} and {LABELS_ARCHIVE} from {HOMEPAGE} (registration "
                f"needed) into the manual directory, or extract them there.")


def prepare_command(data_dir: str, manual_dir: str = "") -> str:
  return (f"python -m saliency_jax.data.prepare --dataset=cityscapes "
          f"--data_dir={data_dir or 'DIR'} --manual_dir={manual_dir or 'MANUAL_DIR'}")


def _label_table() -> np.ndarray:
  """uint8 [256]: label id -> mask value (trainId + 1, VOID for the rest)."""
  table = np.full(256, dense_records.VOID, np.uint8)
  for label_id, train_id in LABEL_TO_TRAIN.items():
    table[label_id] = train_id + 1
  return table


LABEL_TABLE = _label_table()


def mask_of_label_ids(label_ids: np.ndarray) -> np.ndarray:
  """The prepared mask (see the module docstring) of a `gtFine_labelIds` image."""
  return LABEL_TABLE[label_ids]


def boxes_of_instances(instance_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(boxes float32 [N, 4], labels int32 [N])` of the thing instances of a `gtFine_instanceIds`
  image, by increasing instance id: tight `(x0, y0, x1, y1)` pixel-edge boxes, trainIds."""
  boxes, labels = [], []
  for value in np.unique(instance_ids):
    label_id = int(value) // 1000
    if value < 1000 or label_id not in THING_LABELS:
      continue
    hit = instance_ids == value
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
    labels.append(LABEL_TO_TRAIN[label_id])
  return (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int32))


def _label_name(image_name: str, kind: str) -> str:
  """`train/aachen/aachen_000000_000019_leftImg8bit.png` -> its gtFine `kind` file."""
  return image_name[:-len("leftImg8bit.png")] + f"gtFine_{kind}.png"


def plan(images: manual_files.FileTree,
         labels: manual_files.FileTree) -> dict[str, list[str]]:
  """The image files of each split (relative to `leftImg8bit/`), checked to have their labels.

  Raises:
    ManualDirError: if a split has no image, or an image lacks a label file or a label file its
      image (an incomplete extraction).
  """
  found = {}
  for split, folder in SPLITS.items():
    names = sorted(n for n in images.names if n.startswith(f"{folder}/") and _IMAGE_NAME.match(n))
    if not names:
      raise manual_files.ManualDirError(
          f"Cityscapes: expected images {IMAGES_FOLDER}/{folder}/<city>/*_leftImg8bit.png in "
          f"{images.path}, found none. {INSTRUCTIONS}")
    wanted = [_label_name(n, kind) for n in names for kind in ("labelIds", "instanceIds")]
    missing = [n for n in wanted if n not in labels.names]
    if missing:
      raise manual_files.ManualDirError(
          f"Cityscapes: expected the labelIds and instanceIds files of the {len(names)} "
          f"{folder} images in {labels.path}, found {len(missing)} missing (for example "
          f"{LABELS_FOLDER}/{missing[0]}): the extraction is incomplete, extract "
          f"{LABELS_ARCHIVE} again or remove the folder and leave the zip.")
    suffix = "_gtFine_labelIds.png"
    orphans = sorted(n for n in labels.names if n.startswith(f"{folder}/") and n.endswith(suffix)
                     and n[:-len(suffix)] + "_leftImg8bit.png" not in images.names)
    if orphans:
      raise manual_files.ManualDirError(
          f"Cityscapes: expected an image for each of the {folder} label files, found "
          f"{len(orphans)} without one in {images.path} (for example {IMAGES_FOLDER}/"
          f"{orphans[0][:-len(suffix)]}_leftImg8bit.png): the extraction is incomplete, "
          f"extract {IMAGES_ARCHIVE} again or remove the folder and leave the zip.")
    found[split] = names
  return found


def open_trees(manual_dir: str) -> tuple[manual_files.FileTree, manual_files.FileTree]:
  """The images' and the labels' file trees of the manual directory.

  Raises:
    ManualDirError: if the directory, a zip or its folder is missing, or a zip is truncated.
  """
  manual_files.check_manual_dir(manual_dir, "Cityscapes")
  images = manual_files.open_tree(os.path.join(manual_dir, IMAGES_FOLDER),
                                  os.path.join(manual_dir, IMAGES_ARCHIVE),
                                  root=f"{IMAGES_FOLDER}/", what="Cityscapes images")
  labels = manual_files.open_tree(os.path.join(manual_dir, LABELS_FOLDER),
                                  os.path.join(manual_dir, LABELS_ARCHIVE),
                                  root=f"{LABELS_FOLDER}/", what="Cityscapes fine labels")
  return images, labels


def check_manual_dir(manual_dir: str) -> dict[str, list[str]]:
  """Every check of `plan` on the manual directory; the image files of each split."""
  images, labels = open_trees(manual_dir)
  with images, labels:
    return plan(images, labels)


def _png(data: bytes, name: str) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    array = np.asarray(image)
  if array.ndim != 2:
    raise ValueError(f"Cityscapes: expected a one-channel PNG in {name}, found shape "
                     f"{array.shape}.")
  return array


def example(images: manual_files.FileTree, labels: manual_files.FileTree,
            name: str) -> dict:
  """The prepared example of the image file `name` (see `dense_tfds`)."""
  image = images.read(name)
  width, height = dense_tfds.image_size(image)
  label_ids = _png(labels.read(_label_name(name, "labelIds")), name)
  instance_ids = _png(labels.read(_label_name(name, "instanceIds")), name).astype(np.int64)
  for what, array in (("labelIds", label_ids), ("instanceIds", instance_ids)):
    if array.shape != (height, width):
      raise ValueError(f"Cityscapes: expected the {what} of {name} at the image's size "
                       f"{height}x{width}, found {array.shape[0]}x{array.shape[1]}.")
  boxes, box_labels = boxes_of_instances(instance_ids)
  return {"image": image, "mask": dense_tfds.encode_mask(mask_of_label_ids(label_ids)),
          "boxes": boxes, "labels": box_labels, "width": width, "height": height,
          "image/filename": os.path.basename(name)}


class CityscapesDense(tfds.core.GeneratorBasedBuilder):
  """Cityscapes fine (train, validation): images, 19-class masks and thing boxes."""

  name = TFDS_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Train and validation of the fine annotations, with boxes."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description="Cityscapes fine: trainId masks and instance boxes.",
        features=dense_tfds.features("png"), homepage=HOMEPAGE)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    names = check_manual_dir(manual_dir)
    return {split: self._generate_examples(manual_dir=manual_dir, names=names[split])
            for split in SPLITS}

  def _generate_examples(self, *, manual_dir: str, names: list[str]):
    images, labels = open_trees(manual_dir)
    with images, labels:
      for name in names:
        yield name, example(images, labels, name)


def prepare(data_dir: str, manual_dir: str) -> None:
  """Checks the manual directory, then writes the array_record files (no TensorFlow needed)."""
  dense_tfds.prepare(CityscapesDense, data_dir=data_dir, manual_dir=manual_dir,
                     check_manual_dir=check_manual_dir, official_counts=OFFICIAL_COUNTS,
                     title="Cityscapes")


def cityscapes_source(split: str, *, data_dir: str,
                      max_boxes: int = MAX_BOXES) -> dense_tfds.DenseTfdsSource:
  """The raw dense records of a prepared split ("train" or "validation").

  Raises:
    FileNotFoundError: if the dataset has not been prepared (the message gives the command).
  """
  return dense_tfds.DenseTfdsSource.open(
      TFDS_NAME, split=split, data_dir=data_dir, prepare_command=prepare_command(data_dir),
      num_classes=NUM_CLASSES, max_boxes=max_boxes)
