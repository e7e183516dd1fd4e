"""PASCAL VOC 2012 (segmentation subset) for the dense model, through this project's tfds builder.

Our own builder: the catalogue's `voc` downloads from a URL, needs TensorFlow and keeps no masks.

Put into the manual directory `VOCtrainval_11-May-2012.tar` (1.9 GB, from
http://host.robots.ox.ac.uk/pascal/VOC/voc2012/), or the folder `VOCdevkit/VOC2012/` it extracts
to (`tar xf VOCtrainval_11-May-2012.tar`), which holds

    ImageSets/Segmentation/{train,val}.txt    one image id per line
    JPEGImages/<id>.jpg
    Annotations/<id>.xml                      objects: name, bndbox (1-based, inclusive)
    SegmentationClass/<id>.png                palette indices: 0 background, k + 1 class k, 255 void

then, once (no TensorFlow needed):

    python -m saliency_jax.data.prepare --dataset=voc2012 --data_dir=DIR --manual_dir=MANUAL_DIR

Splits: the segmentation subset, "train" (1,464 images) and "validation" (val, 1,449), so that
every image has both a mask and boxes. 20 classes in VOC's order (`CLASS_NAMES`: the mask's
index k + 1 is class k, and so is the box label k). The mask is kept as VOC gives it: 255 marks
object boundaries and difficult regions (`dense_records.VOID`), which the loss and the metrics
leave out. Boxes are every object of the annotation (difficult and truncated ones
included, part boxes not), as pixel edges `(xmin - 1, ymin - 1, xmax, ymax)` clipped to the
image. A missing file, a truncated archive or an extraction lacking files stops the preparation
before it writes anything.
"""

from __future__ import annotations

import io
import os
from xml.etree import ElementTree

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from saliency_jax.data import dense_records
from saliency_jax.data import dense_tfds
from saliency_jax.data import manual_files

TFDS_NAME = "voc2012_dense"
HOMEPAGE = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
ARCHIVE = "VOCtrainval_11-May-2012.tar"
ROOT = "VOCdevkit/VOC2012"
# The official tar's size in bytes (tfds's checksum list); any other is an interrupted download.
OFFICIAL_SIZES = {ARCHIVE: 1_999_639_040}
# tfds split -> the official list.
SPLITS = {"train": "train", "validation": "val"}
OFFICIAL_COUNTS = {"train": 1464, "validation": 1449}
# Boxes per record: room for VOC's most crowded annotations (not counted on the full dataset
# here; an image with more keeps its largest, see `dense_tfds`).
MAX_BOXES = 64
CLASS_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
NUM_CLASSES = len(CLASS_NAMES)

INSTRUCTIONS = (f"Download {ARCHIVE} from {HOMEPAGE} into the manual directory, or extract it "
                f"there to {ROOT}/.")


def prepare_command(data_dir: str, manual_dir: str = "") -> str:
  return (f"python -m saliency_jax.data.prepare --dataset=voc2012 "
          f"--data_dir={data_dir or 'DIR'} --manual_dir={manual_dir or 'MANUAL_DIR'}")


def _files(image_id: str) -> tuple[str, str, str]:
  return (f"JPEGImages/{image_id}.jpg", f"Annotations/{image_id}.xml",
          f"SegmentationClass/{image_id}.png")


def open_tree(manual_dir: str) -> manual_files.FileTree:
  """The files under `VOCdevkit/VOC2012/` of the manual directory (folder or tar).

  Raises:
    ManualDirError: if the directory, the tar and the folder are missing, or the tar is
      truncated (not of the official size, or cut off).
  """
  manual_files.check_manual_dir(manual_dir, "VOC 2012")
  archive = os.path.join(manual_dir, ARCHIVE)
  folder = os.path.join(manual_dir, *ROOT.split("/"))
  if not os.path.isdir(folder) and os.path.isfile(archive):
    size, expected = os.path.getsize(archive), OFFICIAL_SIZES.get(ARCHIVE)
    if expected is not None and size != expected:
      raise manual_files.ManualDirError(
          f"{archive}: expected the official {expected:,} bytes, found {size:,}: the download "
          f"is incomplete or not the official file, download it again.")
  return manual_files.open_tree(folder, archive, root=f"{ROOT}/", what="VOC 2012")


def plan(tree: manual_files.FileTree) -> dict[str, list[str]]:
  """The image ids of each split, checked to have their image, annotation and mask.

  Raises:
    ManualDirError: if a split list is missing or empty, or a listed file is missing (an
      incomplete extraction).
  """
  found = {}
  for split, listed in SPLITS.items():
    list_name = f"ImageSets/Segmentation/{listed}.txt"
    if list_name not in tree.names:
      raise manual_files.ManualDirError(
          f"VOC 2012: expected {ROOT}/{list_name} in {tree.path}, found no such file: the "
          f"download or the extraction is incomplete. {INSTRUCTIONS}")
    ids = tree.read(list_name).decode().split()
    if not ids:
      raise manual_files.ManualDirError(
          f"VOC 2012: expected image ids in {ROOT}/{list_name}, found an empty file.")
    missing = [name for image_id in ids for name in _files(image_id) if name not in tree.names]
    if missing:
      raise manual_files.ManualDirError(
          f"VOC 2012: expected the image, annotation and mask of the {len(ids)} images of "
          f"{list_name} in {tree.path}, found {len(missing)} files missing (for example "
          f"{ROOT}/{missing[0]}): the extraction is incomplete, extract {ARCHIVE} again or "
          f"remove the folder and leave the tar.")
    found[split] = ids
  return found


def check_manual_dir(manual_dir: str) -> dict[str, list[str]]:
  """Every check of `plan` on the manual directory; the image ids of each split."""
  with open_tree(manual_dir) as tree:
    return plan(tree)


def objects(xml: bytes, *, width: int, height: int,
            name: str) -> tuple[np.ndarray, np.ndarray]:
  """`(boxes float32 [N, 4], labels int32 [N])` of an annotation, in its order (see the module
  docstring for the box convention)."""
  boxes, labels = [], []
  for obj in ElementTree.fromstring(xml).findall("object"):
    class_name = (obj.findtext("name") or "").strip()
    if class_name not in CLASS_NAMES:
      raise ValueError(f"VOC 2012: expected object names among the 20 classes in {name}, found "
                       f"{class_name!r}.")
    box = obj.find("bndbox")
    x0, y0, x1, y1 = (float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax"))
    boxes.append((min(max(x0 - 1, 0), width), min(max(y0 - 1, 0), height),
                  min(max(x1, 0), width), min(max(y1, 0), height)))
    labels.append(CLASS_NAMES.index(class_name))
  return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int32)


def example(tree: manual_files.FileTree, image_id: str) -> dict:
  """The prepared example of `image_id` (see `dense_tfds`)."""
  image_name, xml_name, mask_name = _files(image_id)
  image = tree.read(image_name)
  width, height = dense_tfds.image_size(image)
  with Image.open(io.BytesIO(tree.read(mask_name))) as png:
    if png.mode not in ("P", "L"):
      raise ValueError(f"VOC 2012: expected a palette PNG in {mask_name}, found mode "
                       f"{png.mode}.")
    mask = np.asarray(png)
  if mask.shape != (height, width):
    raise ValueError(f"VOC 2012: expected {mask_name} at the image's size {height}x{width}, "
                     f"found {mask.shape[0]}x{mask.shape[1]}.")
  bad = (mask > NUM_CLASSES) & (mask != dense_records.VOID)
  if bad.any():
    raise ValueError(f"VOC 2012: expected mask indices 0..{NUM_CLASSES} or 255 in "
                     f"{mask_name}, found {sorted(set(mask[bad].tolist()))}.")
  boxes, labels = objects(tree.read(xml_name), width=width, height=height, name=xml_name)
  return {"image": image, "mask": dense_tfds.encode_mask(mask), "boxes": boxes,
          "labels": labels, "width": width, "height": height,
          "image/filename": f"{image_id}.jpg"}


class Voc2012Dense(tfds.core.GeneratorBasedBuilder):
  """VOC 2012 segmentation subset (train, validation): images, 21-value masks and boxes."""

  name = TFDS_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "The segmentation subset with masks and the annotations' boxes."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description="PASCAL VOC 2012 segmentation subset: masks and boxes.",
        features=dense_tfds.features("jpeg"), homepage=HOMEPAGE)

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    ids = check_manual_dir(manual_dir)
    return {split: self._generate_examples(manual_dir=manual_dir, ids=ids[split])
            for split in SPLITS}

  def _generate_examples(self, *, manual_dir: str, ids: list[str]):
    with open_tree(manual_dir) as tree:
      for image_id in ids:
        yield image_id, example(tree, image_id)


def prepare(data_dir: str, manual_dir: str) -> None:
  """Checks the manual directory, then writes the array_record files (no TensorFlow needed)."""
  dense_tfds.prepare(Voc2012Dense, data_dir=data_dir, manual_dir=manual_dir,
                     check_manual_dir=check_manual_dir, official_counts=OFFICIAL_COUNTS,
                     title="VOC 2012")


def voc_source(split: str, *, data_dir: str,
               max_boxes: int = MAX_BOXES) -> dense_tfds.DenseTfdsSource:
  """The raw dense records of a prepared split ("train" or "validation").

  Raises:
    FileNotFoundError: if the dataset has not been prepared (the message gives the command).
  """
  return dense_tfds.DenseTfdsSource.open(
      TFDS_NAME, split=split, data_dir=data_dir, prepare_command=prepare_command(data_dir),
      num_classes=NUM_CLASSES, max_boxes=max_boxes)
