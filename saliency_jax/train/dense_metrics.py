"""Losses and metrics of the dense tasks, in the source image's frame.

Targets are the batch fields of `saliency_jax.data.dense_records`: "segmentation" uint8
`[B, S, S]` (0 background, k + 1 class k, `IGNORE` on void pixels), "boxes" float32 `[B, M, 4]` `(x0, y0, x1, y1)` in
pixel edges, "labels" int32 `[B, M]` (-1 padding) and "small" bool `[B, M]`. The model's outputs
are at stride `s = S / h` of the source (`saliency_jax.models.dense.ZoomUnzoom`), output cell
`(i, j)` covering source pixels `[i s, (i + 1) s) x [j s, (j + 1) s)`.

Segmentation: the `[B, h, w, K + 1]` logits are upsampled bilinearly to `S x S` (half-pixel
centres, the cells' layout), and both the loss (pixel cross-entropy, the mean per image) and the
metrics are taken at full resolution, over the pixels that are not `IGNORE` (the real datasets'
void: unlabelled regions, VOC's object boundaries), which count for nothing in either. The metrics sum intersections and unions per class over
the dataset: "miou" over background and the K classes on all pixels (the VOC and Cityscapes
definition), "miou_small" and "miou_large" over the K classes on the pixels inside the boxes of
the small or the large objects only, so that an error on a small object is not drowned by the
background.

Detection (CenterNet, Zhou et al. 2019): `[B, h, w, K + 4]` outputs, K centre-heatmap logits,
then log width and log height in units of `s`, then the sub-cell offset of the centre (through a
sigmoid). The loss is the penalty-reduced focal loss on Gaussian centre heatmaps plus L1 on the
sizes and offsets at the centre cells, plus the cross-entropy of the softmax over the K heatmap
logits at each centre cell, each normalised by the image's object count. The focal loss alone
teaches an object's class only through its other classes' negatives at the centre, which it
weighs by p^2, and learns it slowly (README, "Dense tasks: the dense scenes"). Decoding
keeps the local maxima of the heatmap (3 x 3) and the `TOP_K` best; a detection is a true
positive when its IoU with an unmatched ground-truth box of its class is at least 0.5 (greedy, by
score). "ap" is the mean over classes of the VOC all-point average precision at IoU 0.5, computed
from per-class histograms of the scores (`SCORE_BINS` bins, so that batches add up: detections in
one bin count as tied). "ap_small" and "ap_large" take the small or the large ground-truth
objects only, in COCO's way: detections matched to the other objects are ignored, and so are
unmatched ones whose box is the other size (`SMALL_SIDE`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from saliency_jax import ops
from saliency_jax.models import dense

DENSE_TASKS = ("segmentation", "detection")
# The targets' batch fields: `dense_records.FIELDS`, named again so that the metrics load
# without the input pipelines (tfds, grain).
TARGETS = ("segmentation", "boxes", "labels", "small")
# Channels after the K heatmap logits: log width, log height, x offset, y offset.
BOX_CHANNELS = 4
TOP_K = 32
SCORE_BINS = 100
IOU_THRESHOLD = 0.5
# COCO's small objects: area below 32^2 pixels (an unmatched detection's size class).
SMALL_SIDE = 32.0
# The void pixels' value in "segmentation": `dense_records.VOID`, named again for the same reason
# as `TARGETS`.
IGNORE = 255
REGIONS = ("all", "small", "large")
# The sums `summarize` turns into metrics (the trainer's own means skip them).
SUM_NAMES = ("pixels", "correct", "det_tp", "det_fp", "det_gt")
SUM_PREFIXES = ("inter_", "union_")


def box_saliency_loss(saliency: jax.Array, targets: Mapping[str, jax.Array],
                      image_size: tuple[int, int], *, box_mass: str = "equal") -> jax.Array:
  """`[B]` nats: the KL divergence of the saliency map `[B, g, g]` from its image's box density.

  The density is `ops.kde_saliency` of the image's real boxes (pixel edges, converted to the
  align_corners=True positions on which the map's cells sit), softmaxed over the map's cells: one
  kernel per object, each object the same mass whatever its size (`box_mass="equal"`), so that a
  map that matches it magnifies the small objects and the large ones alike, or a mass in inverse
  proportion to its area (`"inverse_area"`), so that it magnifies the small ones and leaves the
  large near uniform sampling; an image without objects asks for the uniform map (the identity
  grid). Its gradient trains the saliency network directly, where the task's gradient reaches it
  only through the warp.
  """
  boxes = ops.normalize_boxes(targets["boxes"], image_size, align_corners=True)
  logits = ops.kde_saliency(boxes, saliency.shape[1:], valid=targets["labels"] >= 0,
                            box_mass=box_mass)
  return ops.saliency_divergence(ops.softmax_saliency(logits), saliency)


def num_classes(outputs: jax.Array, task: str) -> int:
  """K, the object classes, from the model's output channels."""
  return outputs.shape[-1] - (1 if task == "segmentation" else BOX_CHANNELS)


def _upsample(logits: jax.Array, size: tuple[int, int]) -> jax.Array:
  shape = (logits.shape[0], *size, logits.shape[-1])
  return jax.image.resize(logits.astype(jnp.float32), shape, "bilinear")


def _box_masks(boxes: jax.Array, size: tuple[int, int]) -> jax.Array:
  """bool `[B, M, H, W]`: the pixels whose centre lies in each box."""
  y = jnp.arange(size[0], dtype=jnp.float32) + 0.5
  x = jnp.arange(size[1], dtype=jnp.float32) + 0.5
  b = boxes.astype(jnp.float32)[:, :, None, None, :]
  return ((x[None, None, None, :] >= b[..., 0]) & (x[None, None, None, :] < b[..., 2])
          & (y[None, None, :, None] >= b[..., 1]) & (y[None, None, :, None] < b[..., 3]))


def _in_boxes(boxes: jax.Array, keep: jax.Array, size: tuple[int, int]) -> jax.Array:
  """bool `[B, H, W]`: pixels whose centre lies in one of the kept boxes."""
  return jnp.any(_box_masks(boxes, size) & keep[:, :, None, None], axis=1)


# ---------------------------------------------------------------------------------------------
# Segmentation.


def segmentation_loss(logits: jax.Array, targets: Mapping[str, jax.Array], *,
                      kind: str = "pixel") -> jax.Array:
  """`[B]` pixel cross-entropy of each image at full resolution, `IGNORE` pixels left out.

  `kind`: "pixel", the mean over the image's pixels; "class_balanced", the mean over the classes
  present in the image (background included) of each class's mean over its pixels, so that a
  small object weighs as much as the background it sits on; "object_balanced", the same with
  every object on its own: the mean over the image's objects (the pixels of its class inside
  its box) and over each class's pixels outside its objects (the background, and classes
  without boxes) of their mean cross-entropy, so that a small object weighs as much as a large
  one of its class (needs "boxes" and "labels"; without objects it is "class_balanced"). An
  image with no labelled pixel has loss 0.
  """
  labels, known = _labels(targets)
  up = _upsample(logits, labels.shape[1:3])
  losses = optax.softmax_cross_entropy_with_integer_labels(up, labels)
  if kind == "pixel":
    return (jnp.sum(jnp.where(known, losses, 0.0), axis=(1, 2))
            / jnp.maximum(jnp.sum(known, axis=(1, 2)), 1).astype(losses.dtype))
  if kind not in ("class_balanced", "object_balanced"):
    raise ValueError(f"kind must be one of {dense.SEGMENTATION_LOSSES}; got {kind!r}.")
  rest = known
  sums, counts = [], []
  if kind == "object_balanced":
    # The label map's value of object m's class is its label + 1 (module docstring).
    objects = (_box_masks(targets["boxes"], labels.shape[1:3])
               & (labels[:, None] == targets["labels"][:, :, None, None] + 1)
               & (targets["labels"] >= 0)[:, :, None, None] & known[:, None])
    sums.append(jnp.einsum("bhw,bmhw->bm", losses, objects.astype(losses.dtype)))
    counts.append(jnp.sum(objects, axis=(2, 3), dtype=losses.dtype))
    rest = known & ~jnp.any(objects, axis=1)
  onehot = jax.nn.one_hot(labels, up.shape[-1], dtype=losses.dtype) * rest[..., None]
  sums.append(jnp.einsum("bhw,bhwk->bk", losses, onehot))
  counts.append(jnp.sum(onehot, axis=(1, 2)))
  sums, counts = jnp.concatenate(sums, axis=-1), jnp.concatenate(counts, axis=-1)
  present = counts > 0
  means = jnp.where(present, sums / jnp.maximum(counts, 1.0), 0.0)
  return jnp.sum(means, axis=-1) / jnp.maximum(jnp.sum(present, axis=-1), 1)


def _labels(targets: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """int32 class maps with `IGNORE` read as background, and bool: the pixels not `IGNORE`."""
  labels = targets["segmentation"].astype(jnp.int32)
  known = labels != IGNORE
  return jnp.where(known, labels, 0), known


def pixel_sums(logits: jax.Array, targets: Mapping[str, jax.Array],
               weights: jax.Array) -> dict[str, jax.Array]:
  """"pixels" and "correct": the pixel accuracy's counts over the images of nonzero weight."""
  labels, known = _labels(targets)
  return _pixel_sums(_predict(logits, labels.shape[1:3]), labels,
                     (weights[:, None, None] > 0) & known)


def _predict(logits, size):
  return jnp.argmax(_upsample(logits, size), axis=-1)


def _pixel_sums(predicted, labels, valid):
  return {"pixels": jnp.sum(jnp.broadcast_to(valid, labels.shape), dtype=jnp.float32),
          "correct": jnp.sum(valid & (predicted == labels), dtype=jnp.float32)}


def segmentation_sums(logits: jax.Array, targets: Mapping[str, jax.Array],
                      weights: jax.Array) -> dict[str, jax.Array]:
  """`pixel_sums`, and intersections and unions per class and region (see the module doc)."""
  labels, known = _labels(targets)
  size = labels.shape[1:3]
  classes = logits.shape[-1]
  predicted = _predict(logits, size)
  valid = (weights[:, None, None] > 0) & known
  real = targets["labels"] >= 0
  regions = {"all": valid,
             "small": valid & _in_boxes(targets["boxes"], real & targets["small"], size),
             "large": valid & _in_boxes(targets["boxes"], real & ~targets["small"], size)}
  predicted_1h = jax.nn.one_hot(predicted, classes, dtype=jnp.bool_)
  labels_1h = jax.nn.one_hot(labels, classes, dtype=jnp.bool_)
  sums = _pixel_sums(predicted, labels, valid)
  for region, inside in regions.items():
    inside = inside[..., None]
    inter = jnp.sum(inside & predicted_1h & labels_1h, axis=(0, 1, 2), dtype=jnp.float32)
    union = jnp.sum(inside & (predicted_1h | labels_1h), axis=(0, 1, 2), dtype=jnp.float32)
    first = 0 if region == "all" else 1  # The regions' scores leave the background out.
    for k in range(first, classes):
      sums[f"inter_{region}_{k}"] = inter[k]
      sums[f"union_{region}_{k}"] = union[k]
  return sums


def _summarize_segmentation(sums: Mapping[str, float]) -> dict[str, float]:
  means = {"pixel_accuracy": float(sums["correct"]) / max(float(sums["pixels"]), 1.0)}
  for region in REGIONS:
    ious = [float(sums[name]) / float(sums["union" + name[5:]]) for name in sums
            if name.startswith(f"inter_{region}_") and float(sums["union" + name[5:]]) > 0]
    if ious:
      means["miou" if region == "all" else f"miou_{region}"] = float(np.mean(ious))
  return means


# ---------------------------------------------------------------------------------------------
# Detection.


def _centres(targets: Mapping[str, jax.Array], shape: tuple[int, int], stride: float):
  """Per box: centre cell `[B, M, 2]` (column, row) int32, sub-cell offset, log size, valid."""
  boxes = targets["boxes"].astype(jnp.float32)
  centre = (boxes[..., :2] + boxes[..., 2:]) / (2 * stride)
  cell = jnp.clip(jnp.floor(centre), 0, jnp.array([shape[1] - 1, shape[0] - 1]))
  sides = jnp.maximum(boxes[..., 2:] - boxes[..., :2], 1.0) / stride
  return cell.astype(jnp.int32), centre - cell, jnp.log(sides), targets["labels"] >= 0


def centre_heatmaps(targets: Mapping[str, jax.Array], shape: tuple[int, int], *,
                    num_classes: int, stride: float) -> jax.Array:
  """`[B, h, w, K]` target heatmaps: per class, the max over its boxes of a Gaussian at the
  centre cell (exactly 1 there), of standard deviation a third of the box's geometric mean side
  in cells (at least half a cell)."""
  cell, _, log_sides, valid = _centres(targets, shape, stride)
  sigma = jnp.maximum(jnp.exp(jnp.mean(log_sides, axis=-1)) / 3, 0.5)
  rows = jnp.arange(shape[0], dtype=jnp.float32)[None, :, None, None]
  cols = jnp.arange(shape[1], dtype=jnp.float32)[None, None, :, None]
  distance2 = ((cols - cell[:, None, None, :, 0]) ** 2 + (rows - cell[:, None, None, :, 1]) ** 2)
  gauss = jnp.exp(-distance2 / (2 * sigma[:, None, None, :] ** 2))  # [B, h, w, M]
  classes = jax.nn.one_hot(targets["labels"], num_classes) * valid[..., None]  # [B, M, K]
  return jnp.max(gauss[..., None] * classes[:, None, None], axis=3, initial=0.0)


def _at_cells(values: jax.Array, cell: jax.Array) -> jax.Array:
  """`values[b, cell[b, m, 1], cell[b, m, 0]]` -> `[B, M, C]`."""
  batch = jnp.arange(values.shape[0])[:, None]
  return values[batch, cell[..., 1], cell[..., 0]]


def detection_loss(outputs: jax.Array, targets: Mapping[str, jax.Array], *,
                   stride: float, class_weight: float = 1.0) -> jax.Array:
  """`[B]` focal heatmap loss plus size and offset L1 plus `class_weight` times the classes'
  cross-entropy at the centre cells, per image (see the module docstring; `class_weight=0` is
  CenterNet's loss)."""
  outputs = outputs.astype(jnp.float32)
  k = num_classes(outputs, "detection")
  shape = outputs.shape[1:3]
  heat = centre_heatmaps(targets, shape, num_classes=k, stride=stride)
  logits = outputs[..., :k]
  log_p, log_not_p = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  p = jnp.exp(log_p)
  positive = heat >= 1.0
  focal = jnp.where(positive, (1 - p) ** 2 * log_p, (1 - heat) ** 4 * p ** 2 * log_not_p)
  cell, offset, log_sides, valid = _centres(targets, shape, stride)
  count = jnp.maximum(jnp.sum(valid, axis=1).astype(jnp.float32), 1.0)
  at = _at_cells(outputs, cell)  # [B, M, K + 4]: the class logits, then the box's.
  regression = (jnp.abs(at[..., k:k + 2] - log_sides).sum(-1)
                + jnp.abs(jax.nn.sigmoid(at[..., k + 2:]) - offset).sum(-1))
  classes = optax.softmax_cross_entropy_with_integer_labels(
      at[..., :k], jnp.maximum(targets["labels"], 0))
  per_object = regression + class_weight * classes
  return (-jnp.sum(focal, axis=(1, 2, 3)) + jnp.sum(per_object * valid, axis=1)) / count


def decode_detections(outputs: jax.Array, *, stride: float, top_k: int = TOP_K):
  """The `top_k` best heatmap peaks per image: `(boxes [B, k, 4] (x0, y0, x1, y1) pixels,
  scores [B, k] in (0, 1), classes [B, k] int32)`, best first."""
  outputs = outputs.astype(jnp.float32)
  batch, h, w, _ = outputs.shape
  k = num_classes(outputs, "detection")
  p = jax.nn.sigmoid(outputs[..., :k])
  peaks = jax.lax.reduce_window(p, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
  p = jnp.where(p >= peaks, p, 0.0)
  scores, flat = jax.lax.top_k(p.reshape(batch, -1), min(top_k, h * w * k))
  classes = flat % k
  rows, cols = (flat // k) // w, (flat // k) % w
  cells = jnp.stack([cols, rows], axis=-1)
  at = _at_cells(outputs[..., k:], cells)
  centre = (cells + jax.nn.sigmoid(at[..., 2:])) * stride
  half = jnp.exp(at[..., :2]) * stride / 2
  return jnp.concatenate([centre - half, centre + half], axis=-1), scores, classes.astype(jnp.int32)


def box_iou(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[..., N, 4] x [..., M, 4] -> [..., N, M]` IoU of (x0, y0, x1, y1) boxes (0 for empty)."""
  a, b = a[..., :, None, :], b[..., None, :, :]
  wh = jnp.maximum(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0)
  inter = wh[..., 0] * wh[..., 1]
  area = lambda x: jnp.prod(jnp.maximum(x[..., 2:] - x[..., :2], 0), axis=-1)
  union = area(a) + area(b) - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _match(iou: jax.Array) -> jax.Array:
  """Greedy matching of one image's detections (best first) to ground truth: `[D]` index of
  the matched box, -1 for none. `iou` `[D, M]` is 0 where the classes differ or a box is padding."""
  def step(matched, row):
    candidates = jnp.where(matched, -1.0, row)
    best = jnp.argmax(candidates)
    hit = candidates[best] >= IOU_THRESHOLD
    return matched.at[best].set(matched[best] | hit), jnp.where(hit, best, -1)

  _, matches = jax.lax.scan(step, jnp.zeros(iou.shape[1], bool), iou)
  return matches


def detection_sums(outputs: jax.Array, targets: Mapping[str, jax.Array], weights: jax.Array, *,
                   stride: float) -> dict[str, jax.Array]:
  """Score histograms of true and false positives and ground-truth counts, per region and class:
  "det_tp" and "det_fp" `[3, K, SCORE_BINS]`, "det_gt" `[3, K]` (regions `REGIONS`)."""
  k = num_classes(outputs, "detection")
  boxes, scores, classes = decode_detections(outputs, stride=stride)
  gt_boxes, labels = targets["boxes"].astype(jnp.float32), targets["labels"]
  valid_gt = labels >= 0
  same = (classes[:, :, None] == labels[:, None, :]) & valid_gt[:, None, :]
  matches = jax.vmap(_match)(jnp.where(same, box_iou(boxes, gt_boxes), 0.0))
  hit = matches >= 0
  matched_small = jnp.take_along_axis(targets["small"], jnp.maximum(matches, 0), axis=1)
  sides = jnp.maximum(boxes[..., 2:] - boxes[..., :2], 0)
  looks_small = sides[..., 0] * sides[..., 1] < SMALL_SIDE ** 2
  image = weights[:, None] > 0
  bins = jnp.clip((scores * SCORE_BINS).astype(jnp.int32), 0, SCORE_BINS - 1)
  cells = jax.nn.one_hot(classes * SCORE_BINS + bins, k * SCORE_BINS)  # [B, D, K * bins]
  tp, fp, gt = [], [], []
  for region in REGIONS:
    if region == "all":
      counted_gt, counted_tp, counted_fp = valid_gt, hit, ~hit
    else:
      want = region == "small"
      counted_gt = valid_gt & (targets["small"] == want)
      counted_tp = hit & (matched_small == want)
      counted_fp = ~hit & (looks_small == want)
    tp.append(jnp.einsum("bd,bdc->c", (counted_tp & image).astype(jnp.float32), cells))
    fp.append(jnp.einsum("bd,bdc->c", (counted_fp & image).astype(jnp.float32), cells))
    per_class = jax.nn.one_hot(labels, k) * (counted_gt & image)[..., None]
    gt.append(jnp.sum(per_class, axis=(0, 1)))
  return {"det_tp": jnp.stack(tp).reshape(len(REGIONS), k, SCORE_BINS),
          "det_fp": jnp.stack(fp).reshape(len(REGIONS), k, SCORE_BINS),
          "det_gt": jnp.stack(gt)}


def average_precision(tp: np.ndarray, fp: np.ndarray, num_gt: float) -> float:
  """VOC all-point AP from score histograms `[SCORE_BINS]` (ascending score bins)."""
  tp, fp = np.cumsum(tp[::-1]), np.cumsum(fp[::-1])
  recall = tp / num_gt
  precision = tp / np.maximum(tp + fp, 1e-12)
  # The precision envelope: the best precision at this recall or beyond.
  envelope = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.diff(np.concatenate([[0.0], recall]))
  return float(np.sum(steps * envelope))


def _summarize_detection(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
  tp, fp, gt = (np.asarray(sums[name], np.float64) for name in ("det_tp", "det_fp", "det_gt"))
  means = {}
  for r, region in enumerate(REGIONS):
    aps = [average_precision(tp[r, c], fp[r, c], gt[r, c]) for c in range(gt.shape[1])
           if gt[r, c] > 0]
    if aps:
      means["ap" if region == "all" else f"ap_{region}"] = float(np.mean(aps))
  return means


def summarize(sums: Mapping[str, np.ndarray]) -> dict[str, float]:
  """The dense metrics of accumulated sums (those of whichever task they hold)."""
  means = {}
  if "pixels" in sums:
    means.update(_summarize_segmentation(sums))
  if "det_tp" in sums:
    means.update(_summarize_detection(sums))
  return means
