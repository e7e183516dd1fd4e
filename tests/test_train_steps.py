"""The train and eval steps alone, on a toy model, against losses and updates written in NumPy.

The toy model has the trainer's model interface (`model(images, blur_key=None) -> (outputs,
extras)`): logits = Linear(mean colour + blur shift) with a BatchNorm on the mean colour, where
the blur shift is `uniform(blur_key)` (0 without a key), so that the step's key is visible in the
loss. Expected values come from NumPy: softmax cross-entropy, its gradient for a linear layer,
plain SGD, BatchNorm's running mean.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from saliency_jax import train
from saliency_jax.train import optimizer
from saliency_jax.train import steps

NUM_CLASSES = 3
LEARNING_RATE = 0.5
MOMENTUM = 0.9  # BatchNorm's.


class Toy(nnx.Module):

  def __init__(self, rngs):
    self.norm = nnx.BatchNorm(3, momentum=MOMENTUM, use_bias=False, use_scale=False, rngs=rngs)
    self.linear = nnx.Linear(3, NUM_CLASSES, rngs=rngs)

  def __call__(self, images, blur_key=None):
    colour = jnp.mean(images.astype(jnp.float32) / 255.0, axis=(1, 2))
    features = self.norm(colour)
    if blur_key is not None:
      features = features + jax.random.uniform(blur_key)
    return self.linear(features), {"sampled": images[:, :2, :2], "grid": colour,
                                   "other": colour}


def _split(train_mode=True):
  model = Toy(nnx.Rngs(0))
  model.train() if train_mode else model.eval()
  return nnx.split(model, nnx.Param, ...)


def _batch(mask=(True, True, True, True), labels=(0, 1, 2, 1)):
  rng = np.random.default_rng(0)
  size = len(labels)
  return {"image": rng.integers(0, 256, (size, 4, 4, 3), dtype=np.uint8),
          "label": np.asarray(labels, np.int32), "mask": np.asarray(mask)}


def _reference_step(params, batch, *, shift):
  """NumPy: features, mean cross-entropy over unmasked examples, its gradient, SGD."""
  colour = batch["image"].astype(np.float64).mean(axis=(1, 2)) / 255.0
  mean, var = colour.mean(0), colour.var(0)  # Statistics of the whole batch, padding included.
  features = (colour - mean) / np.sqrt(var + 1e-5) + shift
  kernel = np.asarray(params["linear"]["kernel"][...], np.float64)
  bias = np.asarray(params["linear"]["bias"][...], np.float64)
  logits = features @ kernel + bias
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  onehot = np.eye(NUM_CLASSES)[batch["label"]]
  weights = batch["mask"].astype(np.float64)
  losses = -np.log((probs * onehot).sum(1))
  loss = (weights * losses).sum() / max(weights.sum(), 1.0)
  dlogits = weights[:, None] * (probs - onehot) / max(weights.sum(), 1.0)
  grads = {"kernel": features.T @ dlogits, "bias": dlogits.sum(0)}
  new = {name: value - LEARNING_RATE * grads[name] for name, value in
         (("kernel", kernel), ("bias", bias))}
  grad_norm = np.sqrt(sum((g ** 2).sum() for g in grads.values()))
  return loss, grad_norm, new, (1 - MOMENTUM) * mean


def _step(train_mode_graph, params, model_state, *, seed=0, blur=False, jit=True):
  tx = optax.sgd(LEARNING_RATE)
  state = steps.initial_state(params, model_state, tx, seed=seed)
  step = functools.partial(steps.train_step, graphdef=train_mode_graph, tx=tx,
                           task="classification", blur=blur)
  return state, (jax.jit(step) if jit else step)


def test_train_step_is_one_sgd_step_on_the_masked_mean_loss():
  graphdef, params, model_state = _split()
  # The last example is padding with the "wrong" label: it must count for nothing in the loss.
  batch = _batch(mask=(True, True, True, False), labels=(0, 1, 2, 0))
  state, step = _step(graphdef, params, model_state)
  new_state, metrics = step(state, batch)
  loss, grad_norm, new, running_mean = _reference_step(params, batch, shift=0.0)

  assert int(new_state.step) == 1
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-4)
  np.testing.assert_allclose(new_state.params["linear"]["kernel"][...], new["kernel"],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_state.params["linear"]["bias"][...], new["bias"],
                             rtol=1e-5, atol=1e-6)
  param_norm = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(new_state.params)))
  np.testing.assert_allclose(metrics["param_norm"], param_norm, rtol=1e-5)
  # BatchNorm's running mean moved once, by the batch mean (the model state is carried).
  np.testing.assert_allclose(new_state.model_state["norm"]["mean"][...], running_mean,
                             rtol=1e-5, atol=1e-7)
  # The training sums: 3 counted examples; the loss sum is the mean times the count.
  assert float(metrics["sum_count"]) == 3
  np.testing.assert_allclose(metrics["sum_loss"], 3 * loss, rtol=1e-5)
  assert 0 <= float(metrics["sum_top1"]) <= float(metrics["sum_top5"]) == 3


def test_blur_uses_the_key_of_the_step_and_no_key_without_it():
  graphdef, params, model_state = _split()
  batch = _batch()
  state, step = _step(graphdef, params, model_state, seed=7, blur=True)
  state = state.replace(step=jnp.int32(5))
  _, metrics = step(state, batch)
  # `initial_state` keeps fold_in(key(seed), 1) and the step folds in its own number.
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(7), 1), 5)
  loss, *_ = _reference_step(params, batch, shift=float(jax.random.uniform(key)))
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)

  _, plain = _step(graphdef, params, model_state, seed=7, blur=False)
  _, metrics = plain(state, batch)
  np.testing.assert_allclose(metrics["loss"], _reference_step(params, batch, shift=0.0)[0],
                             rtol=1e-5)


def test_train_step_jit_equals_eager_and_an_all_padding_batch_changes_nothing():
  graphdef, params, model_state = _split()
  batch = _batch()
  state, jitted = _step(graphdef, params, model_state)
  _, eager = _step(graphdef, params, model_state, jit=False)
  for a, b in zip(jax.tree.leaves(jitted(state, batch)), jax.tree.leaves(eager(state, batch))):
    # XLA fuses the compiled step differently: float32 rounding of O(1) values.
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

  # Every example padding: zero loss and gradient, so SGD leaves the parameters as they were.
  empty = _batch(mask=(False,) * 4)
  new_state, metrics = jitted(state, empty)
  assert float(metrics["loss"]) == 0 and float(metrics["grad_norm"]) == 0
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_panels", [1, 3])
def test_eval_step_sums_and_panel_examples(num_panels):
  graphdef, params, model_state = _split(train_mode=False)
  batch = _batch(mask=(True, True, False, True))
  state = steps.initial_state(params, model_state, optax.sgd(LEARNING_RATE), seed=0)
  sums, examples = jax.jit(functools.partial(
      steps.eval_step, graphdef=graphdef, task="classification", num_panels=num_panels))(
          state, batch)

  # Inference mode: BatchNorm normalises with its running statistics (0 and 1 at the start).
  colour = batch["image"].astype(np.float64).mean(axis=(1, 2)) / 255.0
  features = colour / np.sqrt(1 + 1e-5)
  logits = (features @ np.asarray(params["linear"]["kernel"][...])
            + np.asarray(params["linear"]["bias"][...]))
  log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  counted = batch["mask"]
  assert float(sums["count"]) == 3
  np.testing.assert_allclose(
      sums["loss"], -log_probs[counted, batch["label"][counted]].sum(), rtol=1e-5)
  correct = np.argmax(logits, 1) == batch["label"]
  assert float(sums["top1"]) == np.sum(correct & counted)
  assert float(sums["top5"]) == 3  # Three classes: always in the top five.

  # The first examples, with the panels' extras only.
  assert sorted(examples) == ["grid", "image", "label", "output", "sampled"]
  assert all(len(value) == num_panels for value in examples.values())
  np.testing.assert_array_equal(examples["image"], batch["image"][:num_panels])
  np.testing.assert_allclose(examples["output"], logits[:num_panels], rtol=1e-5, atol=1e-6)


def test_the_package_exports_the_steps():
  assert train.train_step is steps.train_step and train.eval_step is steps.eval_step
  assert train.TrainState is steps.TrainState


def test_glimpse_credit_is_reinforce_with_the_mean_view_as_baseline():
  """NumPy: view losses l_kb (cross-entropy), advantages l_kb - mean_k l_kb, the term
  mean_k advantage * log p, and its gradient advantage / K with respect to log p (the views'
  outputs are constants of the term)."""
  rng = np.random.default_rng(0)
  k, b = 3, 4
  outputs = rng.normal(size=(k, b, NUM_CLASSES)).astype(np.float32)
  log_prob = np.log(rng.uniform(0.01, 1.0, (k, b))).astype(np.float32)
  labels = np.asarray([0, 2, 1, 1], np.int32)
  shifted = outputs - outputs.max(-1, keepdims=True)
  log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  losses = -np.take_along_axis(log_softmax, labels[None, :, None].repeat(k, 0), -1)[..., 0]
  advantage = losses - losses.mean(0, keepdims=True)

  def term(outputs, log_prob):
    extras = {"glimpse_outputs": outputs, "glimpse_log_prob": log_prob}
    return jnp.sum(steps.glimpse_credit(extras, jnp.asarray(labels), task="classification"))

  np.testing.assert_allclose(term(outputs, log_prob), (advantage * log_prob).mean(0).sum(),
                             rtol=1e-5)
  d_outputs, d_log_prob = jax.grad(term, argnums=(0, 1))(outputs, log_prob)
  np.testing.assert_array_equal(d_outputs, 0.0)
  np.testing.assert_allclose(d_log_prob, advantage / k, rtol=1e-5, atol=1e-7)


class Penalised(Toy):
  """The toy with a model "penalty" per example: `PENALTY * row * sum(kernel ** 2)`, row the
  example's index (so that the mask's weighting shows)."""

  def __call__(self, images, blur_key=None):
    logits, extras = super().__call__(images, blur_key)
    rows = jnp.arange(images.shape[0], dtype=jnp.float32)
    return logits, {**extras, "penalty": PENALTY * rows * jnp.sum(self.linear.kernel[...] ** 2)}


PENALTY = 0.3


def test_a_models_penalty_is_added_to_each_examples_loss():
  """The loss is the masked mean of cross-entropy + penalty, and SGD follows the penalty's
  gradient too (NumPy: d/dkernel of the masked mean of PENALTY * row * |kernel|^2)."""
  model = Penalised(nnx.Rngs(0))
  model.train()
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  batch = _batch(mask=(True, True, True, False), labels=(0, 1, 2, 0))
  state, step = _step(graphdef, params, model_state)
  new_state, metrics = step(state, batch)
  loss, _, new, _ = _reference_step(params, batch, shift=0.0)
  kernel = np.asarray(params["linear"]["kernel"][...], np.float64)
  rows = np.arange(4) * batch["mask"]
  mean_row = rows.sum() / batch["mask"].sum()
  np.testing.assert_allclose(metrics["loss"], loss + PENALTY * mean_row * np.sum(kernel**2),
                             rtol=1e-5)
  np.testing.assert_allclose(new_state.params["linear"]["kernel"][...],
                             new["kernel"] - LEARNING_RATE * PENALTY * mean_row * 2 * kernel,
                             rtol=1e-5, atol=1e-6)
  # The training sums count the task's loss alone.
  np.testing.assert_allclose(metrics["sum_loss"], 3 * loss, rtol=1e-5)


class TwoViews(Toy):
  """The toy with two views in "view_outputs": the logits and twice the logits; its outputs are
  zeros, so that a loss taken from them would show; `weights` become its "view_weights"."""

  def __init__(self, rngs, weights=None):
    super().__init__(rngs)
    self.weights = weights

  def __call__(self, images, blur_key=None):
    logits, extras = super().__call__(images, blur_key)
    extras = {**extras, "view_outputs": jnp.stack([logits, 2 * logits])}
    if self.weights is not None:
      extras["view_weights"] = jnp.asarray(self.weights, jnp.float32)
    return jnp.zeros_like(logits), extras


@pytest.mark.parametrize("weights", [None, (0.5, 0.5), (0.25, 1.0)])
def test_view_outputs_train_each_view_on_its_own_loss_and_evaluate_each_view(weights):
  """Train: the loss is the masked mean over examples of the two views' cross-entropies (NumPy)
  weighted by "view_weights" (summed without them); eval: "top1_warped" and "top1_uniform"
  count each view's correct examples."""
  model = TwoViews(nnx.Rngs(0), weights)
  model.train()
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  batch = _batch(mask=(True, True, True, False), labels=(0, 1, 2, 0))
  state, step = _step(graphdef, params, model_state)
  _, metrics = step(state, batch)
  colour = batch["image"].astype(np.float64).mean(axis=(1, 2)) / 255.0
  features = (colour - colour.mean(0)) / np.sqrt(colour.var(0) + 1e-5)
  logits = (features @ np.asarray(params["linear"]["kernel"][...])
            + np.asarray(params["linear"]["bias"][...]))

  def cross_entropy(x):
    shifted = x - x.max(1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return -log_softmax[np.arange(len(x)), batch["label"]]

  w = (1.0, 1.0) if weights is None else weights
  expected = w[0] * cross_entropy(logits) + w[1] * cross_entropy(2 * logits)
  np.testing.assert_allclose(metrics["loss"], expected[:3].mean(), rtol=1e-5)

  model.eval()
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  state = steps.initial_state(params, model_state, optax.sgd(LEARNING_RATE), seed=0)
  sums, _ = steps.eval_step(state, batch, graphdef=graphdef, task="classification",
                            num_panels=1)
  features = colour / np.sqrt(1 + 1e-5)  # BatchNorm's running statistics at the start.
  logits = (features @ np.asarray(params["linear"]["kernel"][...])
            + np.asarray(params["linear"]["bias"][...]))
  correct = (np.argmax(logits, 1) == batch["label"]) & batch["mask"]
  assert float(sums["top1_warped"]) == float(sums["top1_uniform"]) == correct.sum()


def test_the_optimizer_reads_the_loss_of_the_prediction():
  """The step hands its optimizer the mean loss of the model's prediction (`value=`), which the
  saliency hold watches: the NumPy loss, and no update while it is above the threshold."""
  graphdef, params, model_state = _split()
  batch = _batch()
  loss, _, new, _ = _reference_step(params, batch, shift=0.0)
  for threshold, moves in ((loss + 1.0, True), (loss - 1.0, False)):
    tx = optax.chain(optimizer.hold_until_loss_below(threshold), optax.sgd(LEARNING_RATE))
    state = steps.initial_state(params, model_state, tx, seed=0)
    step = jax.jit(functools.partial(steps.train_step, graphdef=graphdef, tx=tx,
                                     task="classification", blur=False))
    new_state, _ = step(state, batch)
    np.testing.assert_allclose(new_state.opt_state[0].mean_loss, loss, rtol=1e-5)
    want = new["kernel"] if moves else params["linear"]["kernel"][...]
    np.testing.assert_allclose(new_state.params["linear"]["kernel"][...], want, rtol=1e-5,
                               atol=1e-6)
