"""Losses and evaluation metrics of every task the trainer runs.

Classification (CUB-200, iNaturalist, the synthetic demo): softmax cross-entropy; top-1 and top-5
accuracy. Regression (gaze): squared error; mean Euclidean distance error. Segmentation and
detection: see `dense_metrics`. Metrics are computed per batch as masked sums so that padded
evaluation examples count for nothing and batches add up exactly; `summarize` turns the sums
into means.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from saliency_jax.train import dense_metrics

TASKS = ("classification", "regression", *dense_metrics.DENSE_TASKS)


def _check_task(task: str, labels: Any) -> None:
  if task not in TASKS:
    raise ValueError(f"task: expected one of {TASKS}, got {task!r}.")
  if (task in dense_metrics.DENSE_TASKS) != isinstance(labels, Mapping):
    raise ValueError(f"labels: expected the dense targets (a mapping, see `targets`) for "
                     f"{task!r} and an array otherwise; got {type(labels).__name__}.")


def targets(batch: Mapping[str, jax.Array], task: str) -> Any:
  """What `per_example_loss` compares the outputs with: "label", or the dense targets."""
  if task in dense_metrics.DENSE_TASKS:
    return {name: batch[name] for name in dense_metrics.TARGETS}
  return batch["label"]


def _stride(outputs: jax.Array, labels: Mapping[str, jax.Array]) -> float:
  return labels["segmentation"].shape[1] / outputs.shape[1]


def per_example_loss(outputs: jax.Array, labels: Any, *, task: str,
                     segmentation_loss: str = "pixel") -> jax.Array:
  """The training loss of each example.

  Args:
    outputs: `[B, K]` logits (classification), `[B, D]` predictions (regression), or a dense
      model's `[B, h, w, C]` outputs (see `dense_metrics`).
    labels: `[B]` int class ids, `[B, D]` float targets, or the dense targets (`targets`).
    task: one of `TASKS`.
    segmentation_loss: the segmentation loss's kind (`dense_metrics.segmentation_loss`).

  Returns:
    `[B]` float32: cross-entropy, the squared Euclidean error summed over the D outputs, or the
    dense task's loss.
  """
  _check_task(task, labels)
  if task == "segmentation":
    return dense_metrics.segmentation_loss(outputs, labels, kind=segmentation_loss)
  if task == "detection":
    return dense_metrics.detection_loss(outputs, labels, stride=_stride(outputs, labels))
  outputs = outputs.astype(jnp.float32)
  if task == "classification":
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
  return jnp.sum(jnp.square(outputs - labels.astype(jnp.float32)), axis=-1)


def batch_metrics(outputs: jax.Array, labels: jax.Array, mask: jax.Array, *,
                  task: str, groups: Mapping[str, jax.Array] | None = None
                  ) -> dict[str, jax.Array]:
  """Sums over the unmasked examples of one batch.

  Args:
    outputs: `[B, K]` or `[B, D]`, as for `per_example_loss`.
    labels: `[B]` or `[B, D]`.
    mask: `[B]` bool, False for padding.
    task: one of `TASKS`.
    groups: optional `{name: [B] bool}` subsets (GazeCapture's phones and tablets, which the
      paper reports separately); each adds every sum again as "metric/name" over its members.

  Returns:
    float32 scalars: "count", "loss"; classification adds "top1" and "top5" (numbers of
    correct examples, top-5 capped at K classes), regression adds "distance" (sum of the
    Euclidean errors); and the same per group. The dense tasks add the sums of
    `dense_metrics` (detection's are arrays: `add_sums` adds them alike).
  """
  sums = _masked_sums(outputs, labels, mask, task=task)
  for name, member in (groups or {}).items():
    sums.update({f"{metric}/{name}": value for metric, value in _masked_sums(
        outputs, labels, mask & member, task=task).items()})
  return sums


def training_sums(outputs: jax.Array, labels: Any, losses: jax.Array, mask: jax.Array, *,
                  task: str) -> dict[str, jax.Array]:
  """The sums a training step logs, each a float32 scalar: "count", "loss" (of the step's own
  `[B]` `losses`), and the per-example metrics of `batch_metrics` ("top1" and "top5",
  "distance", or segmentation's "pixels" and "correct"). The dense tasks' per-class and
  detection sums are evaluation's only: they cost a training step of the dense model more
  than its unwarp does."""
  _check_task(task, labels)
  weights = mask.astype(jnp.float32)
  sums = {"count": jnp.sum(weights), "loss": jnp.sum(weights * losses)}
  if task == "segmentation":
    sums.update(dense_metrics.pixel_sums(outputs, labels, weights))
  elif task not in dense_metrics.DENSE_TASKS:
    sums.update(_example_sums(outputs, labels, weights, task=task))
  return sums


def _masked_sums(outputs, labels, mask, *, task):
  weights = mask.astype(jnp.float32)
  sums = {
      "count": jnp.sum(weights),
      "loss": jnp.sum(weights * per_example_loss(outputs, labels, task=task)),
  }
  if task == "segmentation":
    sums.update(dense_metrics.segmentation_sums(outputs, labels, weights))
  elif task == "detection":
    sums.update(dense_metrics.detection_sums(outputs, labels, weights,
                                             stride=_stride(outputs, labels)))
  else:
    sums.update(_example_sums(outputs, labels, weights, task=task))
  return sums


def _example_sums(outputs, labels, weights, *, task):
  outputs = outputs.astype(jnp.float32)
  if task == "classification":
    # Rank of the true class = how many logits beat it, a tie going to the lower class (as
    # argmax does), so that a constant prediction scores its one class's share, not 100 %.
    labels = labels.astype(jnp.int32)
    true_logit = jnp.take_along_axis(outputs, labels[:, None], axis=-1)
    lower = jnp.arange(outputs.shape[-1]) < labels[:, None]
    rank = jnp.sum((outputs > true_logit) | ((outputs == true_logit) & lower), axis=-1)
    return {"top1": jnp.sum(weights * (rank < 1)), "top5": jnp.sum(weights * (rank < 5))}
  error = jnp.linalg.norm(outputs - labels.astype(jnp.float32), axis=-1)
  return {"distance": jnp.sum(weights * error)}


def summarize(sums: Mapping[str, float]) -> dict[str, float]:
  """Means from accumulated `batch_metrics` sums.

  Returns:
    "loss", and "top1"/"top5" (fractions in [0, 1]) or "distance" (mean distance error, in
    the labels' unit), or the dense metrics (`dense_metrics.summarize`); "count" is kept as the
    number of examples. A group's "metric/name" is its mean over the group's "count/name"
    examples, and is left out when the group is empty.
  """
  count = float(sums["count"])
  if count <= 0:
    raise ValueError("sums: no example was counted (count is 0); is the evaluation set empty?")
  means = dense_metrics.summarize(sums)
  for name, value in sums.items():
    if name in dense_metrics.SUM_NAMES or name.startswith(dense_metrics.SUM_PREFIXES):
      continue
    metric, _, group = name.partition("/")
    total = float(sums[f"count/{group}"]) if group else count
    if total > 0:
      means[name] = total if metric == "count" else float(value) / total
  return means


def add_sums(total: dict[str, Any] | None, batch: Mapping[str, jax.Array]) -> dict[str, Any]:
  """Adds one batch's sums (fetched to the host) to a running total, in float64 (scalars as
  floats, arrays as NumPy arrays)."""
  batch = {name: (float(value) if value.ndim == 0 else value) for name, value in
           ((name, np.asarray(value, np.float64)) for name, value in batch.items())}
  if total is None:
    return batch
  return {name: total[name] + batch[name] for name in total}


def at_chance(results: Mapping[str, float], *, num_classes: int) -> bool:
  """Whether a classifier's evaluation loss (`summarize`'s "loss") is no better than chance's:
  at least 98 % of log(num_classes), a constant prediction's on balanced classes. A run that never
  took off ends so (the same output for every image), as does a model whose input does not show
  the class. A skewed label prior lowers a constant prediction's loss, so that such a run can go
  unflagged."""
  return num_classes >= 2 and results["loss"] >= 0.98 * math.log(num_classes)
