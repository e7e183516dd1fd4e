"""Dense losses and metrics (saliency_jax.train.dense_metrics) against NumPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.train import dense_metrics
from saliency_jax.train import metrics


def _targets(size, boxes, labels, small, segmentation=None):
  """A batch of one image's targets; boxes are integer pixel edges."""
  if segmentation is None:
    segmentation = np.zeros((size, size), np.uint8)
    for (x0, y0, x1, y1), label in zip(boxes, labels):
      segmentation[y0:y1, x0:x1] = label + 1
  return {"segmentation": jnp.asarray(segmentation[None]),
          "boxes": jnp.asarray(np.asarray(boxes, np.float32)[None]),
          "labels": jnp.asarray(np.asarray(labels, np.int32)[None]),
          "small": jnp.asarray(np.asarray(small, bool)[None])}


def _reference_ious(predicted, labels, region, classes):
  """Per-class IoU over the pixels of `region`, by boolean masks (None where the union is 0)."""
  ious = {}
  for k in classes:
    inter = np.sum(region & (predicted == k) & (labels == k))
    union = np.sum(region & ((predicted == k) | (labels == k)))
    if union:
      ious[k] = inter / union
  return ious


def test_segmentation_ious_match_a_reference_in_every_region():
  rng = np.random.default_rng(0)
  size, classes = 40, 3
  boxes = [(2, 3, 10, 9), (20, 20, 38, 37), (12, 1, 17, 6)]
  labels, small = [0, 2, 1], [True, False, True]
  target = _targets(size, boxes, labels, small)
  labels_map = np.asarray(target["segmentation"][0])
  # Stride 1: the upsampling is the identity, so the prediction is the logits' argmax.
  logits = rng.normal(size=(1, size, size, classes + 1)).astype(np.float32)
  logits[0, labels_map > 0, labels_map[labels_map > 0]] += 2.0  # Mostly right on objects.
  sums = metrics.batch_metrics(jnp.asarray(logits), target, jnp.ones(1, bool),
                               task="segmentation")
  means = metrics.summarize(jax.device_get(sums))
  predicted = logits[0].argmax(-1)
  everywhere = np.ones((size, size), bool)
  regions = {"small": np.zeros_like(everywhere), "large": np.zeros_like(everywhere)}
  for (x0, y0, x1, y1), is_small in zip(boxes, small):
    regions["small" if is_small else "large"][y0:y1, x0:x1] = True
  expected = {
      "miou": _reference_ious(predicted, labels_map, everywhere, range(classes + 1)),
      "miou_small": _reference_ious(predicted, labels_map, regions["small"], range(1, 4)),
      "miou_large": _reference_ious(predicted, labels_map, regions["large"], range(1, 4)),
  }
  for name, ious in expected.items():
    assert means[name] == pytest.approx(np.mean(list(ious.values())), abs=1e-9), name
  assert means["pixel_accuracy"] == pytest.approx(np.mean(predicted == labels_map))
  assert means["count"] == 1


def test_training_keeps_only_the_pixel_counts_of_the_evaluation_sums():
  rng = np.random.default_rng(5)
  target = _targets(32, [(2, 3, 10, 9), (12, 12, 30, 31)], [0, 1], [True, False])
  logits = jnp.asarray(rng.normal(size=(1, 8, 8, 3)).astype(np.float32))
  losses = metrics.per_example_loss(logits, target, task="segmentation")
  training = metrics.training_sums(logits, target, losses, jnp.ones(1, bool),
                                   task="segmentation")
  evaluation = metrics.batch_metrics(logits, target, jnp.ones(1, bool), task="segmentation")
  assert sorted(training) == ["correct", "count", "loss", "pixels"]
  for name, value in training.items():
    np.testing.assert_allclose(value, evaluation[name], rtol=1e-6, err_msg=name)
  detection = metrics.training_sums(jnp.zeros((1, 8, 8, 6)), target, losses, jnp.ones(1, bool),
                                    task="detection")
  assert sorted(detection) == ["count", "loss"]  # AP needs the whole evaluation set.


def test_the_targets_are_the_dense_records_fields():
  from saliency_jax.data import dense_records  # The metrics themselves do not load the data.
  assert dense_metrics.TARGETS == dense_records.FIELDS


def test_a_perfect_prediction_at_stride_four_scores_one_and_padding_counts_nothing():
  size, stride, classes = 32, 4, 2
  # Vertical stripes of whole output cells: the bilinear upsampling keeps every pixel's argmax.
  cells = np.array([0, 1, 1, 0, 2, 2, 0, 1])
  segmentation = np.repeat(np.tile(cells, (size, 1)), stride, axis=1)[:, :size]
  segmentation = segmentation.astype(np.uint8)
  target = _targets(size, [(4, 0, 12, 32)], [0], [True], segmentation=segmentation)
  logits = 10.0 * jax.nn.one_hot(cells, classes + 1)[None, None].repeat(size // stride, axis=1)
  good = metrics.batch_metrics(logits, target, jnp.ones(1, bool), task="segmentation")
  means = metrics.summarize(jax.device_get(good))
  assert means["miou"] == 1.0 and means["miou_small"] == 1.0 and means["pixel_accuracy"] == 1.0
  assert "miou_large" not in means  # No large object: no score rather than a made-up one.
  # A padded example (mask False) adds nothing, however wrong its prediction.
  padded = metrics.batch_metrics(-logits, target, jnp.zeros(1, bool), task="segmentation")
  total = metrics.summarize(metrics.add_sums(jax.device_get(good), jax.device_get(padded)))
  assert total["miou"] == 1.0 and total["count"] == 1
  loss = metrics.per_example_loss(logits, target, task="segmentation")
  worse = metrics.per_example_loss(-logits, target, task="segmentation")
  # Pixels next to a stripe edge read blended logits: small, not zero, loss.
  assert loss.shape == (1,) and float(loss[0]) < 0.05 < 5 < float(worse[0])


def _perfect_detection(target, shape, stride, classes):
  """Outputs that decode to exactly the target boxes (scores 1 - 1e-4 at the centres)."""
  heat = dense_metrics.centre_heatmaps(target, shape, num_classes=classes, stride=stride)
  logits = jnp.where(heat >= 1.0, 9.0, -9.0)
  boxes = target["boxes"][0]
  centre = (boxes[:, :2] + boxes[:, 2:]) / (2 * stride)
  cell = jnp.floor(centre).astype(jnp.int32)
  offset = centre - cell
  regression = jnp.zeros(shape + (4,))
  for m in range(boxes.shape[0]):
    if int(target["labels"][0, m]) < 0:
      continue
    log_sides = jnp.log((boxes[m, 2:] - boxes[m, :2]) / stride)
    offset_logit = jnp.log(offset[m] / (1 - offset[m]))
    regression = regression.at[cell[m, 1], cell[m, 0]].set(
        jnp.concatenate([log_sides, offset_logit]))
  return jnp.concatenate([logits, regression[None]], axis=-1)


def test_detections_decode_exactly_and_score_ap_one_and_a_missed_object_costs_recall():
  size, stride, classes = 64, 4, 2
  boxes = [(5, 6, 13, 14), (30, 28, 62, 60), (40, 4, 50, 16), (0, 0, 0, 0)]
  labels, small = [0, 1, 0, -1], [True, False, True, False]
  target = _targets(size, boxes, labels, small)
  outputs = _perfect_detection(target, (size // stride,) * 2, stride, classes)
  decoded, scores, decoded_classes = dense_metrics.decode_detections(outputs, stride=stride)
  found = {(tuple(np.round(np.asarray(b), 4)), int(c)) for b, s, c in
           zip(decoded[0], scores[0], decoded_classes[0]) if s > 0.5}
  assert found == {(tuple(map(float, b)), l) for b, l in zip(boxes[:3], labels[:3])}
  sums = metrics.batch_metrics(outputs, target, jnp.ones(1, bool), task="detection")
  means = metrics.summarize(jax.device_get(sums))
  assert means["ap"] == means["ap_small"] == means["ap_large"] == pytest.approx(1.0)
  # Without the large object's peak: class 1 has recall 0, so AP = (1 + 0) / 2 overall, the
  # small objects keep AP 1 and the large ones get 0.
  cell = (np.array(boxes[1][:2]) + np.array(boxes[1][2:])) // (2 * stride)
  missed = outputs.at[0, cell[1], cell[0], 1].set(-9.0)
  means = metrics.summarize(jax.device_get(
      metrics.batch_metrics(missed, target, jnp.ones(1, bool), task="detection")))
  assert means["ap"] == pytest.approx(0.5) and means["ap_small"] == pytest.approx(1.0)
  assert means["ap_large"] == pytest.approx(0.0)


def test_average_precision_is_the_voc_all_point_area():
  # Scores in bins 9 (TP), 7 (FP), 5 (TP), 2 (FP) with 3 objects: precision 1 at recall 1/3,
  # 2/3 at recall 2/3 (the envelope), recall never reaches 1. AP = 1/3 + 1/3 * 2/3.
  tp, fp = np.zeros(10), np.zeros(10)
  tp[[9, 5]], fp[[7, 2]] = 1, 1
  assert dense_metrics.average_precision(tp, fp, 3) == pytest.approx(1 / 3 + 2 / 9)
  # A false positive above every true one halves the precision: [FP, TP] with one object.
  tp, fp = np.zeros(10), np.zeros(10)
  tp[3], fp[8] = 1, 1
  assert dense_metrics.average_precision(tp, fp, 1) == pytest.approx(0.5)


def test_centre_heatmaps_peak_at_one_on_the_centre_cells():
  target = _targets(32, [(0, 0, 8, 8), (16, 8, 32, 32)], [1, 1], [True, False])
  heat = dense_metrics.centre_heatmaps(target, (8, 8), num_classes=2, stride=4)
  assert heat.shape == (1, 8, 8, 2) and float(heat[..., 0].max()) == 0.0
  assert float(heat.max()) == 1.0
  assert {tuple(map(int, c)) for c in np.argwhere(np.asarray(heat[0, ..., 1]) == 1.0)} == {
      (1, 1), (5, 6)}  # (row, column) of the centres (4, 4) and (24, 20) at stride 4.


def test_detection_loss_is_finite_on_an_empty_image_and_lower_for_a_perfect_output():
  size, stride = 32, 4
  empty = _targets(size, [(0, 0, 0, 0)], [-1], [False])
  zeros = jnp.zeros((1, 8, 8, 2 + 4))
  assert np.isfinite(float(metrics.per_example_loss(zeros, empty, task="detection")[0]))
  target = _targets(size, [(4, 4, 12, 14)], [1], [True])
  perfect = _perfect_detection(target, (8, 8), stride, 2)
  good = float(metrics.per_example_loss(perfect, target, task="detection")[0])
  bad = float(metrics.per_example_loss(zeros, target, task="detection")[0])
  assert good < 0.05 < bad


def test_detection_class_term_is_the_softmax_cross_entropy_at_the_centres():
  # Reference (NumPy): the class term is the loss with `class_weight=1` less the loss with 0
  # (CenterNet's); it must be the mean, over the image's real objects, of the cross-entropy of
  # the softmax over the K heatmap logits at the object's centre cell (stride 4: the boxes'
  # centres (8, 9.5) and (22, 20) fall in the cells (column, row) (2, 2) and (5, 5)). The
  # padding object counts for nothing.
  size, stride, k = 32, 4, 3
  target = _targets(size, [(4, 4, 12, 15), (16, 12, 28, 28), (0, 0, 0, 0)], [2, 0, -1],
                    [True, False, False])
  rng = np.random.default_rng(11)
  outputs = rng.normal(size=(1, 8, 8, k + 4)).astype(np.float32)
  with_term = dense_metrics.detection_loss(outputs, target, stride=stride)
  without = dense_metrics.detection_loss(outputs, target, stride=stride, class_weight=0.0)
  def ce(row, col, label):
    z = outputs[0, row, col, :k].astype(np.float64)
    return np.log(np.exp(z - z.max()).sum()) + z.max() - z[label]
  expected = (ce(2, 2, 2) + ce(5, 5, 0)) / 2
  np.testing.assert_allclose(float(with_term[0] - without[0]), expected, rtol=1e-4)
  np.testing.assert_allclose(
      float(dense_metrics.detection_loss(outputs, target, stride=stride, class_weight=2.0)[0]
            - without[0]), 2 * expected, rtol=1e-4)


def test_segmentation_losses_against_a_numpy_reference():
  # Logits at stride 1, so no upsampling: the reference is the cross-entropy of each pixel,
  # averaged over the pixels ("pixel") or per present class, then over the classes
  # ("class_balanced"), computed here with NumPy.
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  labels = np.zeros((2, 8, 8), np.uint8)
  labels[0, 1:3, 1:3] = 2  # 4 pixels of class 2 on 60 of background.
  labels[0, 5, 5] = 3
  labels[1] = 1  # One class only: both losses are the plain mean.
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  ce = -np.take_along_axis(log_p, labels[..., None].astype(np.int64), -1)[..., 0]
  balanced = [np.mean([ce[b][labels[b] == c].mean() for c in np.unique(labels[b])])
              for b in range(2)]
  targets = {"segmentation": jnp.asarray(labels)}
  np.testing.assert_allclose(dense_metrics.segmentation_loss(logits, targets),
                             ce.mean(axis=(1, 2)), rtol=1e-5)
  np.testing.assert_allclose(dense_metrics.segmentation_loss(logits, targets,
                                                             kind="class_balanced"),
                             balanced, rtol=1e-5)
  assert balanced[1] == pytest.approx(ce[1].mean(), rel=1e-6)
  np.testing.assert_allclose(
      metrics.per_example_loss(logits, targets, task="segmentation",
                               segmentation_loss="class_balanced"), balanced, rtol=1e-5)
  with pytest.raises(ValueError, match=r"kind must be one of \('pixel', 'class_balanced', "):
    dense_metrics.segmentation_loss(logits, targets, kind="focal")


def test_object_balanced_loss_weighs_each_object_alike_against_a_numpy_reference():
  # Two objects of class 0 (label value 1), a 2x2 one and a 5x5 one, one of class 1 whose box
  # also covers background, a class-2 pixel with no box and a void pixel; the second image has
  # no objects. Reference (NumPy): the mean over the groups (each object's pixels of its class
  # inside its box; each class's pixels outside its objects) of the group's mean cross-entropy.
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(2, 10, 10, 4)).astype(np.float32)
  labels = np.zeros((2, 10, 10), np.uint8)
  labels[0, 1:3, 1:3] = 1
  labels[0, 4:9, 4:9] = 1
  labels[0, 1:3, 6:8] = 2
  labels[0, 9, 0] = 3
  labels[0, 0, 9] = dense_metrics.IGNORE
  labels[1, 5:, :] = 2
  boxes = np.zeros((2, 4, 4), np.float32)
  boxes[0, :3] = [(1, 1, 3, 3), (4, 4, 9, 9), (5, 0, 9, 4)]  # (x0, y0, x1, y1)
  object_labels = np.array([[0, 0, 1, -1], [-1, -1, -1, -1]], np.int32)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  safe = np.where(labels == dense_metrics.IGNORE, 0, labels).astype(np.int64)
  ce = -np.take_along_axis(log_p, safe[..., None], -1)[..., 0]
  known = labels != dense_metrics.IGNORE
  small, large = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
  small[1:3, 1:3], large[4:9, 4:9] = True, True
  third = (labels[0] == 2)
  rest = known[0] & ~small & ~large & ~third
  groups = [small, large, third] + [rest & (labels[0] == c) for c in (0, 3)]
  first = np.mean([ce[0][g].mean() for g in groups])
  second = np.mean([ce[1][labels[1] == c].mean() for c in (0, 2)])
  targets = {"segmentation": jnp.asarray(labels), "boxes": jnp.asarray(boxes),
             "labels": jnp.asarray(object_labels)}
  got = dense_metrics.segmentation_loss(logits, targets, kind="object_balanced")
  np.testing.assert_allclose(got, [first, second], rtol=1e-5)
  # Without objects it is the class-balanced loss; with them it differs (the two class-0
  # objects count apart).
  balanced = dense_metrics.segmentation_loss(logits, targets, kind="class_balanced")
  np.testing.assert_allclose(got[1], balanced[1], rtol=1e-6)
  assert abs(float(got[0]) - float(balanced[0])) > 1e-3


def test_void_pixels_count_for_nothing_in_the_losses_and_the_metrics():
  # The reference: the same NumPy formulas over the labelled pixels only. Void (255) covers a
  # block of background, a corner of an object and, in the second image, everything.
  rng = np.random.default_rng(8)
  size, classes = 12, 3
  logits = rng.normal(size=(2, size, size, classes + 1)).astype(np.float32)
  labels = np.zeros((2, size, size), np.uint8)
  labels[0, 2:6, 2:6] = 2
  labels[0, 8:11, 1:4] = 1
  labels[0, 0:3, 7:12] = dense_metrics.IGNORE
  labels[0, 2, 2] = dense_metrics.IGNORE
  labels[1] = dense_metrics.IGNORE
  known = labels != dense_metrics.IGNORE
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  safe = np.where(known, labels, 0).astype(np.int64)
  ce = -np.take_along_axis(log_p, safe[..., None], -1)[..., 0]
  targets = {"segmentation": jnp.asarray(labels)}
  pixel = dense_metrics.segmentation_loss(logits, targets)
  np.testing.assert_allclose(pixel, [ce[0][known[0]].mean(), 0.0], rtol=1e-5)
  balanced = np.mean([ce[0][known[0] & (labels[0] == c)].mean() for c in (0, 1, 2)])
  np.testing.assert_allclose(
      dense_metrics.segmentation_loss(logits, targets, kind="class_balanced"),
      [balanced, 0.0], rtol=1e-5)

  # Metrics of the first image: IoUs and accuracy over its labelled pixels only.
  boxes, object_labels, small = [(2, 2, 6, 6), (1, 8, 4, 11)], [1, 0], [True, False]
  target = _targets(size, boxes, object_labels, small, segmentation=labels[0])
  sums = metrics.batch_metrics(jnp.asarray(logits[:1]), target, jnp.ones(1, bool),
                               task="segmentation")
  means = metrics.summarize(jax.device_get(sums))
  predicted = logits[0].argmax(-1)
  assert means["pixel_accuracy"] == pytest.approx(np.mean(predicted[known[0]] ==
                                                          labels[0][known[0]]))
  expected = _reference_ious(predicted, labels[0], known[0], range(classes + 1))
  assert means["miou"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)
  in_small = np.zeros((size, size), bool)
  in_small[2:6, 2:6] = True
  expected = _reference_ious(predicted, labels[0], known[0] & in_small, range(1, classes + 1))
  assert means["miou_small"] == pytest.approx(np.mean(list(expected.values())), abs=1e-9)


def _box_density(boxes, size, g, box_mass="equal"):
  """The box saliency's target in NumPy, from `ops.kde_saliency`'s documented mixture: one
  normal per box (centre, sd sqrt((0.25 side)^2 + 0.05^2) per axis), the boxes' mean (or with
  `box_mass="inverse_area"` their mean weighted by 1 / area, sides at least 0.05), mixed
  0.9 / 0.1 with the uniform density 1/4, normalised over the g x g cells."""
  cells = np.linspace(-1.0, 1.0, g)
  density = np.zeros((g, g))
  masses = []
  for box in boxes:
    x0, y0, x1, y1 = (np.asarray(box, np.float64) - 0.5) * 2.0 / (size - 1) - 1.0
    masses.append(1.0 if box_mass == "equal" else 1.0 / (max(x1 - x0, 0.05) * max(y1 - y0, 0.05)))
  for box, mass in zip(boxes, masses):
    # Pixel edges -> the align_corners=True positions on which the cells sit.
    x0, y0, x1, y1 = (np.asarray(box, np.float64) - 0.5) * 2.0 / (size - 1) - 1.0
    sx = np.hypot(0.25 * (x1 - x0), 0.05)
    sy = np.hypot(0.25 * (y1 - y0), 0.05)
    nx = np.exp(-0.5 * ((cells - (x0 + x1) / 2) / sx) ** 2) / sx
    ny = np.exp(-0.5 * ((cells - (y0 + y1) / 2) / sy) ** 2) / sy
    density += mass * np.outer(ny, nx) / (2 * np.pi) / sum(masses)
  density = 0.9 * density + 0.1 / 4 if boxes else np.full((g, g), 0.25)
  return density / density.sum()


def test_box_saliency_loss_is_the_maps_kl_divergence_from_the_boxes_density():
  size, g = 64, 9
  boxes, labels = [(2, 4, 10, 12), (40, 30, 62, 60)], [0, 2]
  targets = _targets(size, boxes + [(0, 0, 0, 0)], labels + [-1], [True, False, False])
  rng = np.random.default_rng(0)
  saliency = rng.uniform(0.1, 1.0, (1, g, g))
  saliency /= saliency.sum()
  got = dense_metrics.box_saliency_loss(jnp.asarray(saliency, jnp.float32), targets, (size, size))
  want = _box_density(boxes, size, g)
  expected = np.sum(want * np.log(want / saliency[0]))
  np.testing.assert_allclose(np.asarray(got), [expected], rtol=1e-4)
  # The map that matches the density costs nothing (up to float32 rounding).
  matched = dense_metrics.box_saliency_loss(jnp.asarray(want[None], jnp.float32), targets,
                                            (size, size))
  assert abs(float(matched[0])) < 1e-5
  # A small box in the top-right corner (x large, y small): of the maps peaked on one corner
  # cell, the one on row 0, column g - 1 costs least.
  corner = _targets(size, [(size - 4, 0, size, 4)], [1], [True])
  costs = {}
  for cell in ((0, 0), (0, g - 1), (g - 1, 0), (g - 1, g - 1)):
    peaked = np.full((1, g, g), 1e-3)
    peaked[(0, *cell)] = 1.0
    costs[cell] = float(dense_metrics.box_saliency_loss(
        jnp.asarray(peaked / peaked.sum(), jnp.float32), corner, (size, size))[0])
  assert min(costs, key=costs.get) == (0, g - 1), costs


def test_box_saliency_loss_with_inverse_area_masses():
  size, g = 64, 9
  boxes, labels = [(2, 4, 10, 12), (30, 24, 62, 60)], [0, 2]
  targets = _targets(size, boxes + [(0, 0, 0, 0)], labels + [-1], [True, False, False])
  saliency = np.random.default_rng(1).uniform(0.1, 1.0, (1, g, g))
  saliency /= saliency.sum()
  got = dense_metrics.box_saliency_loss(jnp.asarray(saliency, jnp.float32), targets, (size, size),
                                        box_mass="inverse_area")
  want = _box_density(boxes, size, g, box_mass="inverse_area")
  np.testing.assert_allclose(np.asarray(got), [np.sum(want * np.log(want / saliency[0]))],
                             rtol=1e-4)
  # The small box takes most of the mass: more of the target lies in its quadrant than with
  # "equal" masses.
  equal = _box_density(boxes, size, g)
  assert want[:g // 2, :g // 2].sum() > equal[:g // 2, :g // 2].sum() + 0.2


def test_box_saliency_loss_asks_an_image_without_objects_for_the_uniform_map():
  size, g = 32, 5
  targets = _targets(size, [(0, 0, 0, 0)], [-1], [False])
  uniform = jnp.full((1, g, g), 1.0 / g**2, jnp.float32)
  assert abs(float(dense_metrics.box_saliency_loss(uniform, targets, (size, size))[0])) < 1e-6
  peaked = jnp.asarray(np.eye(g)[None] / g, jnp.float32)  # Zero off the diagonal.
  assert float(dense_metrics.box_saliency_loss(peaked, targets, (size, size))[0]) > 1.0
