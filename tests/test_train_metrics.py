"""Losses and metrics against PyTorch (cross-entropy, `topk`) and NumPy (distances)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from saliency_jax.train import metrics


def test_classification_metrics_match_torch():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(16, 10)).astype(np.float32)
  labels = rng.integers(0, 10, size=16).astype(np.int32)
  mask = np.arange(16) < 13  # The last three are evaluation padding.
  sums = metrics.batch_metrics(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask),
                               task="classification")
  t_logits, t_labels = torch.tensor(logits)[:13], torch.tensor(labels, dtype=torch.long)[:13]
  loss = torch.nn.functional.cross_entropy(t_logits, t_labels, reduction="sum")
  top5 = t_logits.topk(5, dim=1).indices
  np.testing.assert_allclose(sums["loss"], loss.item(), rtol=1e-5)
  assert float(sums["count"]) == 13
  assert float(sums["top1"]) == (top5[:, 0] == t_labels).sum().item()
  assert float(sums["top5"]) == (top5 == t_labels[:, None]).any(dim=1).sum().item()
  means = metrics.summarize(metrics.add_sums(metrics.add_sums(None, sums), sums))
  np.testing.assert_allclose(means["loss"], loss.item() / 13, rtol=1e-5)
  assert means["count"] == 26


def test_tied_logits_rank_as_a_stable_sort():
  """Ties go to the lower class, as NumPy's stable argsort of -logits orders them (the expected
  ranks): all-equal logits score the share of labels 0 (top-1) and below 5 (top-5), not 100 %."""
  rng = np.random.default_rng(1)
  logits = rng.integers(0, 3, size=(64, 10)).astype(np.float32)  # Many ties.
  logits[:8] = 0.0
  labels = rng.integers(0, 10, size=64).astype(np.int32)
  sums = metrics.batch_metrics(jnp.asarray(logits), jnp.asarray(labels), jnp.ones(64, bool),
                               task="classification")
  order = np.argsort(-logits, axis=1, kind="stable")
  rank = np.argmax(order == labels[:, None], axis=1)
  assert float(sums["top1"]) == np.sum(rank < 1) and float(sums["top5"]) == np.sum(rank < 5)
  constant = metrics.batch_metrics(jnp.zeros((64, 10)), jnp.asarray(labels), jnp.ones(64, bool),
                                   task="classification")
  assert float(constant["top1"]) == np.sum(labels == 0)
  assert float(constant["top5"]) == np.sum(labels < 5)


def test_regression_metrics_match_numpy():
  rng = np.random.default_rng(1)
  outputs = rng.normal(size=(8, 2)).astype(np.float32)
  targets = rng.normal(size=(8, 2)).astype(np.float32)
  mask = np.ones(8, bool)
  mask[5] = False
  sums = metrics.batch_metrics(jnp.asarray(outputs), jnp.asarray(targets), jnp.asarray(mask),
                               task="regression")
  diff = (outputs - targets)[mask]
  np.testing.assert_allclose(sums["distance"], np.sqrt((diff ** 2).sum(1)).sum(), rtol=1e-5)
  np.testing.assert_allclose(sums["loss"], (diff ** 2).sum(), rtol=1e-5)
  assert "top1" not in sums


def test_bad_task_and_empty_sums():
  with pytest.raises(ValueError, match="task"):
    metrics.per_example_loss(jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32), task="ranking")
  with pytest.raises(ValueError, match="labels: expected the dense targets"):
    metrics.per_example_loss(jnp.zeros((1, 4, 4, 3)), jnp.zeros((1,), jnp.int32),
                             task="segmentation")
  with pytest.raises(ValueError, match="count is 0"):
    metrics.summarize({"count": 0.0, "loss": 0.0})


def test_per_device_gaze_errors_match_numpy():
  # GazeCapture: the paper reports phones and tablets separately.
  rng = np.random.default_rng(2)
  outputs = rng.normal(size=(10, 2)).astype(np.float32)
  targets = rng.normal(size=(10, 2)).astype(np.float32)
  mask = np.arange(10) < 9  # The last one is padding.
  tablet = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 1], bool)
  sums = metrics.batch_metrics(
      jnp.asarray(outputs), jnp.asarray(targets), jnp.asarray(mask), task="regression",
      groups={"phone": jnp.asarray(~tablet), "tablet": jnp.asarray(tablet)})
  means = metrics.summarize(metrics.add_sums(None, sums))
  errors = np.sqrt(((outputs - targets) ** 2).sum(1))
  for name, member in (("phone", ~tablet & mask), ("tablet", tablet & mask)):
    np.testing.assert_allclose(means[f"distance/{name}"], errors[member].mean(), rtol=1e-5)
    assert means[f"count/{name}"] == member.sum()
  np.testing.assert_allclose(means["distance"], errors[mask].mean(), rtol=1e-5)
  assert means["count"] == 9
  # A device missing from the evaluation set has no mean rather than 0 / 0.
  only_phones = metrics.summarize(metrics.add_sums(None, metrics.batch_metrics(
      jnp.asarray(outputs), jnp.asarray(targets), jnp.asarray(mask & ~tablet),
      task="regression", groups={"tablet": jnp.asarray(tablet)})))
  assert "distance/tablet" not in only_phones and "count/tablet" not in only_phones


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training_sums_are_the_scalar_evaluation_sums(task):
  # The step's own losses stand in for `per_example_loss`: with those, both sets of sums agree.
  rng = np.random.default_rng(3)
  outputs = jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32))
  labels = (jnp.asarray(rng.integers(0, 5, size=6), jnp.int32) if task == "classification"
            else jnp.asarray(rng.normal(size=(6, 5)).astype(np.float32)))
  mask = jnp.asarray(np.arange(6) < 4)
  losses = metrics.per_example_loss(outputs, labels, task=task)
  training = metrics.training_sums(outputs, labels, losses, mask, task=task)
  evaluation = metrics.batch_metrics(outputs, labels, mask, task=task)
  assert training.keys() == evaluation.keys()
  for name, value in evaluation.items():
    np.testing.assert_allclose(training[name], value, rtol=1e-6, err_msg=name)
  # "loss" is the sum of the losses it was given, not recomputed.
  doubled = metrics.training_sums(outputs, labels, 2 * losses, mask, task=task)
  np.testing.assert_allclose(doubled["loss"], 2 * evaluation["loss"], rtol=1e-6)


def test_at_chance_flags_a_loss_no_better_than_a_constant_prediction():
  """A constant prediction on balanced classes loses log(C) (1.7918 for 6 classes)."""
  assert metrics.at_chance({"loss": float(np.log(6))}, num_classes=6)
  assert metrics.at_chance({"loss": 2.3}, num_classes=6)  # Worse than a constant prediction.
  assert not metrics.at_chance({"loss": 0.98 * np.log(6) - 1e-3}, num_classes=6)
  assert not metrics.at_chance({"loss": 5.0}, num_classes=1)
