"""The prepared layout of the real dense datasets (Cityscapes, VOC 2012), and their source.

The project's tfds builders (`cityscapes`, `voc`) write every example with the features
`FEATURES`, in each image's own size (nothing is resized when preparing):
- `image`: the official encoded file (PNG for Cityscapes, JPEG for VOC), `[H, W, 3]`;
- `mask`: a one-channel PNG `[H, W]` of the dense record convention, 0 for background,
  `k + 1` on the pixels of class `k`, and `dense_records.VOID` (255) on void pixels (unlabelled,
  VOC's object boundaries), which the loss and the metrics leave out;
- `boxes` float32 `[N, 4]`: `(x0, y0, x1, y1)` in pixel edges of the image (an object covering
  columns `x0 .. x1 - 1`), N >= 0 the image's objects; `labels` int32 `[N]`: their classes;
- `width`, `height`: the image's size; `image/filename`: the official file name.

`DenseTfdsSource` reads them back without TensorFlow (`tfds_source.open_tfds_source`) as raw
dense records: `{"image", "mask"}` still encoded, `boxes`, `labels` padded to `max_boxes` rows
(-1 labels after the objects) and `width`, `height`. An image with more objects than
`max_boxes` keeps its `max_boxes` largest boxes (by area; the mask keeps every object).
`transforms.dense_transform` turns a raw record into a dense record at the delivered size.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from saliency_jax.data import tfds_source

_LOG = logging.getLogger("saliency_jax.data")


def features(image_format: str):
  """The tfds features of a prepared example (see the module docstring)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format=image_format),
      "mask": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
      "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
      "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "width": tfds.features.Scalar(dtype=np.int32),
      "height": tfds.features.Scalar(dtype=np.int32),
      "image/filename": tfds.features.Text(),
  })


def prepare(builder_class, *, data_dir: str, manual_dir: str, check_manual_dir,
            official_counts: dict[str, int], title: str) -> None:
  """Checks a manual directory, then writes a builder's array_record files (no TensorFlow).

  Args:
    builder_class: the project's tfds builder.
    data_dir: the tfds data directory ("" for tfds's default).
    manual_dir: the downloads ("" for `<data_dir>/downloads/manual`).
    check_manual_dir: `manual_dir -> {split: examples}`, raising before anything is written.
    official_counts: each split's official size (a different count is only warned about).
    title: the dataset's name in the warnings.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or os.path.expanduser(os.path.join("~", "tensorflow_datasets"))
  manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual")
  found = check_manual_dir(manual_dir)  # Fails with the fix before tfds creates anything.
  for split, listed in found.items():
    if len(listed) != official_counts[split]:
      _LOG.warning("%s: %d %s images, the official split has %d.", title, len(listed), split,
                   official_counts[split])
  builder = builder_class(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def encode_mask(mask: np.ndarray) -> bytes:
  """uint8 `[H, W]` -> one-channel PNG bytes (tfds would encode arrays with TensorFlow)."""
  buffer = io.BytesIO()
  Image.fromarray(np.ascontiguousarray(mask, np.uint8), "L").save(buffer, format="PNG")
  return buffer.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
  """`(width, height)` from an encoded image's header."""
  with Image.open(io.BytesIO(data)) as image:
    return image.size


@dataclasses.dataclass(frozen=True, eq=False)
class DenseTfdsSource:
  """Raw dense records of a prepared split (see the module docstring).

  Attributes:
    source: a tfds data source with the features `features()` (see `open`).
    num_classes: the dataset's object classes.
    max_boxes: rows of `boxes` and `labels`.
  """

  source: Any
  num_classes: int
  max_boxes: int

  @classmethod
  def open(cls, name: str, *, split: str, data_dir: str, prepare_command: str,
           num_classes: int, max_boxes: int) -> DenseTfdsSource:
    """Opens a prepared split.

    Raises:
      FileNotFoundError: if it has not been prepared (the message gives `prepare_command`).
    """
    source = tfds_source.open_tfds_source(name, split=split, data_dir=data_dir,
                                          prepare_command=prepare_command)
    return cls(source, num_classes=num_classes, max_boxes=max_boxes)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self.source[int(index)]
    boxes = np.asarray(record["boxes"], np.float32).reshape(-1, 4)
    labels = np.asarray(record["labels"], np.int32).reshape(-1)
    if len(labels) > self.max_boxes:
      area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
      keep = np.sort(np.argsort(-area, kind="stable")[:self.max_boxes])
      boxes, labels = boxes[keep], labels[keep]
    padded = np.zeros((self.max_boxes, 4), np.float32)
    padded[:len(labels)] = boxes
    return {"image": record["image"], "mask": record["mask"], "boxes": padded,
            "labels": np.pad(labels, (0, self.max_boxes - len(labels)), constant_values=-1),
            "width": int(record["width"]), "height": int(record["height"])}
