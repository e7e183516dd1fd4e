"""The record layout of dense (segmentation and detection) sources, and its checks.

A dense record is `{"image", "mask", "boxes", "labels", "small"}`:
- `image`: as any record (see `datasets`), `[S, S, 3]` once preprocessed;
- `mask` uint8 `[S, S]`: 0 for background, `k + 1` on the pixels of class `k`, `VOID` on pixels
  that count for nothing (the loss and the metrics leave them out);
- `boxes` float32 `[M, 4]`: `(x0, y0, x1, y1)` in pixel edges of the image (an object covering
  columns `x0 .. x1 - 1`), the order of the ops' `warp_boxes`;
- `labels` int32 `[M]`: each box's class, -1 on padding rows (which must come last);
- `small` bool `[M]`: the objects that count as small in the metrics.
`M` is fixed per source, so that batches stack. In a batch the mask is called "segmentation"
("mask" is the padding flag of every batch).

Sources of real photographs (`cityscapes`, `voc2012`; see `dense_tfds`) give *raw* records
instead: `image` and `mask` encoded at the photograph's own size, `mask` holding `VOID` on
unlabelled pixels, `boxes` in that image's pixels, no `small`, plus its `width` and `height`.
`transforms.dense_transform` makes dense records of them: both resized to the square `S`
(nearest neighbour for the mask, boxes scaled and clipped), `VOID` kept, and `small` set to a
box area below `SMALL_AREA` pixels of the delivered image.

`targets` checks a record before it reaches a batch: a wrong shape, a class id out of range or a
box outside the image or inside out raises a `ValueError` that names the record, instead of a
silently wrong loss. An image with no object (every label -1) is valid: it trains and evaluates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FIELDS = ("segmentation", "boxes", "labels", "small")
# Void pixels (unlabelled regions, VOC's object boundaries): left out of the loss and the
# metrics (`train.dense_metrics.IGNORE`).
VOID = 255
# An object is small when its box covers fewer pixels of the delivered image than this: COCO's
# small objects, the metrics' `SMALL_SIDE` ** 2. The dense scenes agree: their small objects
# (12-24 px sides) are under it, their large ones (at least 43 x 64 px) over it.
SMALL_AREA = 32 * 32


def targets(record: dict[str, Any], *, size: int, num_classes: int,
            index: int) -> dict[str, np.ndarray]:
  """The checked dense targets of `record` (record number `index`), as a batch holds them.

  Returns:
    `{"segmentation": uint8 [size, size], "boxes": float32 [M, 4], "labels": int32 [M],
    "small": bool [M]}`.

  Raises:
    ValueError: if a field is missing or has the wrong shape, or a value is out of range.
  """
  where = f"dense record {index}"
  missing = [name for name in ("mask", "boxes", "labels", "small") if name not in record]
  if missing:
    raise ValueError(f"{where}: expected the fields mask, boxes, labels and small; "
                     f"{', '.join(missing)} missing.")
  mask = np.asarray(record["mask"])
  if mask.shape != (size, size):
    raise ValueError(f"{where}: expected a mask of shape {(size, size)}, the image's; got "
                     f"{mask.shape}.")
  labelled = mask[mask != VOID]
  if labelled.max(initial=0) > num_classes or labelled.min(initial=0) < 0:
    raise ValueError(f"{where}: expected mask values in [0, {num_classes}] (0 = background, "
                     f"k + 1 = class k) or {VOID} (void); got values in "
                     f"[{labelled.min()}, {labelled.max()}] besides void.")
  boxes = np.asarray(record["boxes"], np.float32)
  labels = np.asarray(record["labels"])
  small = np.asarray(record["small"])
  count = labels.shape[0] if labels.ndim == 1 else -1
  if (boxes.ndim != 2 or boxes.shape[1] != 4 or labels.ndim != 1
      or boxes.shape[0] != count or small.shape != labels.shape):
    raise ValueError(f"{where}: expected boxes [M, 4], labels [M] and small [M]; got shapes "
                     f"{boxes.shape}, {labels.shape} and {small.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: expected integer labels; got dtype {labels.dtype}.")
  if np.any((labels < -1) | (labels >= num_classes)):
    raise ValueError(f"{where}: expected labels in [0, {num_classes}) or -1 for padding; got "
                     f"{sorted(set(labels.tolist()))}.")
  valid = labels >= 0
  if np.any(valid[1:] & ~valid[:-1]):
    raise ValueError(f"{where}: expected the padding rows (label -1) after every object; got "
                     f"labels {labels.tolist()}.")
  real = boxes[valid]
  bad = ~np.isfinite(real).all(axis=1)
  bad |= (real[:, 0] < 0) | (real[:, 1] < 0) | (real[:, 2] > size) | (real[:, 3] > size)
  bad |= (real[:, 2] < real[:, 0]) | (real[:, 3] < real[:, 1])
  if np.any(bad):
    row = int(np.nonzero(valid)[0][np.argmax(bad)])
    raise ValueError(f"{where}: expected boxes (x0, y0, x1, y1) with 0 <= x0 <= x1 <= {size} "
                     f"and 0 <= y0 <= y1 <= {size}; got {boxes[row].tolist()} in row {row}.")
  return {"segmentation": mask.astype(np.uint8),
          "boxes": np.where(valid[:, None], boxes, 0.0).astype(np.float32),
          "labels": labels.astype(np.int32), "small": small.astype(bool) & valid}


def padding(num_boxes: int, *, size: int) -> dict[str, np.ndarray]:
  """The targets of a padding example: background everywhere, no object."""
  return {"segmentation": np.zeros((size, size), np.uint8),
          "boxes": np.zeros((num_boxes, 4), np.float32),
          "labels": np.full((num_boxes,), -1, np.int32), "small": np.zeros((num_boxes,), bool)}
