"""Losses and evaluation metrics for the two kinds of task the paper trains.

Classification (CUB-200, iNaturalist, the synthetic demo): softmax cross-entropy; top-1 and top-5
accuracy. Regression (gaze): squared error; mean Euclidean distance error. Metrics are computed
per batch as masked sums so that padded evaluation examples count for nothing and batches add up
exactly; `summarize` turns the sums into means.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

TASKS = ("classification", "regression")


def _check_task(task: str) -> None:
  if task not in TASKS:
    raise ValueError(f"task: expected one of {TASKS}, got {task!r}.")


def per_example_loss(outputs: jax.Array, labels: jax.Array, *, task: str) -> jax.Array:
  """The training loss of each example.

  Args:
    outputs: `[B, K]` logits (classification) or `[B, D]` predictions (regression).
    labels: `[B]` int class ids, or `[B, D]` float targets.
    task: "classification" or "regression".

  Returns:
    `[B]` float32: cross-entropy, or the squared Euclidean error summed over the D outputs.
  """
  _check_task(task)
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
    task: "classification" or "regression".
    groups: optional `{name: [B] bool}` subsets (GazeCapture's phones and tablets, which the
      paper reports separately); each adds every sum again as "metric/name" over its members.

  Returns:
    float32 scalars: "count", "loss"; classification adds "top1" and "top5" (numbers of
    correct examples, top-5 capped at K classes), regression adds "distance" (sum of the
    Euclidean errors); and the same per group.
  """
  sums = _masked_sums(outputs, labels, mask, task=task)
  for name, member in (groups or {}).items():
    sums.update({f"{metric}/{name}": value for metric, value in _masked_sums(
        outputs, labels, mask & member, task=task).items()})
  return sums


def _masked_sums(outputs, labels, mask, *, task):
  weights = mask.astype(jnp.float32)
  sums = {
      "count": jnp.sum(weights),
      "loss": jnp.sum(weights * per_example_loss(outputs, labels, task=task)),
  }
  outputs = outputs.astype(jnp.float32)
  if task == "classification":
    # Rank of the true class = how many logits beat it; ties count for the label.
    true_logit = jnp.take_along_axis(outputs, labels[:, None].astype(jnp.int32), axis=-1)
    rank = jnp.sum(outputs > true_logit, axis=-1)
    sums["top1"] = jnp.sum(weights * (rank < 1))
    sums["top5"] = jnp.sum(weights * (rank < 5))
  else:
    error = jnp.linalg.norm(outputs - labels.astype(jnp.float32), axis=-1)
    sums["distance"] = jnp.sum(weights * error)
  return sums


def summarize(sums: Mapping[str, float]) -> dict[str, float]:
  """Means from accumulated `batch_metrics` sums.

  Returns:
    "loss", and "top1"/"top5" (fractions in [0, 1]) or "distance" (mean distance error, in
    the labels' unit); "count" is kept as the number of examples. A group's "metric/name" is
    its mean over the group's "count/name" examples, and is left out when the group is empty.
  """
  count = float(sums["count"])
  if count <= 0:
    raise ValueError("sums: no example was counted (count is 0); is the evaluation set empty?")
  means = {}
  for name, value in sums.items():
    metric, _, group = name.partition("/")
    total = float(sums[f"count/{group}"]) if group else count
    if total > 0:
      means[name] = total if metric == "count" else float(value) / total
  return means


def add_sums(total: dict[str, float] | None, batch: Mapping[str, jax.Array]) -> dict[str, float]:
  """Adds one batch's sums (fetched to the host) to a running total, in float64."""
  batch = {name: float(np.asarray(value, np.float64)) for name, value in batch.items()}
  if total is None:
    return batch
  return {name: total[name] + batch[name] for name in total}
