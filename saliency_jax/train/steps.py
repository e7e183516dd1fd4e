"""The train and eval steps: pure functions of `(state, batch)`, jitted once per run.

A model here is an NNX module called as `model(images, blur_key=None) -> (outputs, extras)`
(every model of `saliency_jax.models`). A sampler with several glimpses (`SaliencySampler`'s
`glimpses`) also returns, in training mode, each view's outputs and the log probability of the
cell its view was drawn at; the train step adds the score-function (REINFORCE) term that moves
the map towards the cells whose views lose less than the example's mean view (`glimpse_credit`).
A model's extra "penalty" `[B]` (the sampler's `saliency_cost`) is added to each example's loss,
and so is, on dense tasks with `saliency_supervision`, the map's distance from the image's boxes,
and with `segmentation_auxiliary` the segmentation loss of the extra "segmentation_outputs";
its extra "view_outputs" `[V, B, C]` in training mode (the sampler's `uniform_view="each"` or
"mean") replaces the outputs in the loss, which is then the sum of the views' losses weighted
by its extra "view_weights" `[V]` (1 each when absent: each view gets the full gradient it
would get alone; "mean" gives 0.5 each, so that at the identity warp, where the views are the
same image, the task network gets the uniform baseline's gradient; README, the zoom-task suite).
The steps receive the model split (`nnx.split`) into a graph definition, which
`experiment.build_experiment` binds with `functools.partial` before jitting, and the arrays,
which travel in the `TrainState`. Batches are the loader's: "image" uint8
`[B, H, W, 3]`, the targets (`metrics.targets`) and "mask" bool `[B]`, False on padding
examples, which count for nothing.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from saliency_jax.train import dense_metrics
from saliency_jax.train import metrics as metrics_lib
from saliency_jax.train import optimizer as optimizer_lib

# The sampler's extras that the panels draw.
PANEL_EXTRAS = ("sampled", "grid", "saliency")


class TrainState(flax.struct.PyTreeNode):
  """Everything a step reads and writes, and everything a checkpoint holds (with the loader).

  Attributes:
    step: int32 scalar, optimizer steps taken.
    params: the model's `nnx.Param` variables.
    model_state: the model's other variables (BatchNorm statistics, RNG counters).
    opt_state: the optax state.
    rng: `[2]` uint32 raw key data; step `s` uses `fold_in(rng, s)`.
  """
  step: jax.Array
  params: nnx.State
  model_state: nnx.State
  opt_state: optax.OptState
  rng: jax.Array


def initial_state(params: nnx.State, model_state: nnx.State,
                  tx: optax.GradientTransformation, *, seed: int) -> TrainState:
  """Step 0: the model's variables, a fresh optimizer state and the run's step key."""
  rng = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                    opt_state=tx.init(params), rng=rng)


def glimpse_credit(extras: Mapping[str, jax.Array], labels: Any, *, task: str) -> jax.Array:
  """`[B]` the score-function term of several glimpses: `mean_k (l_k - mean_j l_j) log p(c_k)`.

  `l_k` is view k's loss (constant here), `p(c_k)` the map's probability of the cell view k was
  drawn at: its gradient is an unbiased estimate of the gradient of the expected view loss with
  respect to the map (REINFORCE, with the example's mean view loss as the baseline), so cells
  whose views lose less than the others gain probability and the rest lose it.
  """
  outputs = jax.lax.stop_gradient(extras["glimpse_outputs"])
  k, b = outputs.shape[:2]
  view_labels = jax.tree.map(lambda y: jnp.broadcast_to(y[None], (k,) + y.shape).reshape(
      (k * b,) + y.shape[1:]), labels)
  view_losses = metrics_lib.per_example_loss(outputs.reshape((k * b,) + outputs.shape[2:]),
                                             view_labels, task=task).reshape(k, b)
  advantage = view_losses - jnp.mean(view_losses, axis=0, keepdims=True)
  return jnp.mean(advantage * extras["glimpse_log_prob"], axis=0)


def train_step(state: TrainState, batch: Mapping[str, jax.Array], blur: bool, *,
               graphdef: nnx.GraphDef, tx: optax.GradientTransformation, task: str,
               segmentation_loss: str = "pixel", saliency_supervision: float = 0.0,
               segmentation_auxiliary: float = 0.0, saliency_supervision_mass: str = "equal"
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on the mean loss of the batch's unmasked examples.

  Args:
    state: the state before the step.
    batch: a training batch.
    blur: the blur warm-up (the sampler's per-example blur keyed by the step); it changes the
      graph, so it is static under `jit` (positional, for `jit`'s `static_argnums`).
    graphdef: the model in training mode (`nnx.split(model, nnx.Param, ...)[0]`).
    tx: the optimizer.
    task: one of `metrics.TASKS`.
    segmentation_loss: `dense_metrics.segmentation_loss`'s kind.
    saliency_supervision: weight of `dense_metrics.box_saliency_loss` (dense tasks whose model
      has a saliency map), added to each example's loss; the classification sampler's
      supervision comes in its "penalty" instead.
    saliency_supervision_mass: that loss's `box_mass` (how an image's boxes share the target).
    segmentation_auxiliary: weight of the `segmentation_loss` of the model's extra
      "segmentation_outputs" (the detection head's auxiliary segmentation), added to each
      example's loss.

  Returns:
    The state after the step, and `{"loss", "grad_norm", "param_norm", "sum_<metric>"...}`:
    the mean loss (with the uniform view's "each" or "mean", of the views' weighted losses; with the
    glimpses' term and the model's "penalty", if any), the gradient's and the new parameters'
    global norms, and the batch's training sums (`metrics.training_sums`).
  """
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  weights = batch["mask"].astype(jnp.float32)
  labels = metrics_lib.targets(batch, task)

  def loss_fn(params):
    # Copies: the step's Variables must belong to this trace for BatchNorm to update them.
    model = nnx.merge(graphdef, params, state.model_state, copy=True)
    outputs, extras = model(batch["image"], blur_key=key if blur else None)
    if "view_outputs" in extras:  # Each view of the sampler's uniform view on its own loss.
      views = extras["view_outputs"]
      view_losses = jnp.stack([metrics_lib.per_example_loss(view, labels, task=task)
                               for view in views])
      # The views' weights (the sampler's uniform_view="mean": 0.5 each); by default their sum.
      view_weights = extras.get("view_weights", jnp.ones((len(views),), jnp.float32))
      losses = jnp.tensordot(view_weights, view_losses, axes=1)
      # The loss of the model's prediction alone, which the optimizer's saliency hold reads.
      prediction_losses = metrics_lib.per_example_loss(outputs, labels, task=task)
    else:
      losses = prediction_losses = metrics_lib.per_example_loss(
          outputs, labels, task=task, segmentation_loss=segmentation_loss)
    total = losses
    if "glimpse_outputs" in extras:
      total = total + glimpse_credit(extras, labels, task=task)
    if segmentation_auxiliary and "segmentation_outputs" in extras:
      total = total + segmentation_auxiliary * dense_metrics.segmentation_loss(
          extras["segmentation_outputs"], labels, kind=segmentation_loss)
    if "penalty" in extras:  # The model's own per-example terms (the sampler's saliency cost).
      total = total + extras["penalty"]
    if saliency_supervision and task in dense_metrics.DENSE_TASKS and "saliency" in extras:
      total = total + saliency_supervision * dense_metrics.box_saliency_loss(
          extras["saliency"], labels, batch["image"].shape[1:3], box_mass=saliency_supervision_mass)
    loss = jnp.sum(weights * total) / jnp.maximum(jnp.sum(weights), 1.0)
    prediction_loss = jnp.sum(weights * prediction_losses) / jnp.maximum(jnp.sum(weights), 1.0)
    return loss, (outputs, losses, prediction_loss, nnx.state(model, nnx.Not(nnx.Param)))

  (loss, (outputs, losses, prediction_loss, model_state)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params, value=prediction_loss)
  params = optax.apply_updates(state.params, updates)
  sums = metrics_lib.training_sums(outputs, labels, losses, batch["mask"], task=task)
  # The parameter norm also catches an update that overflows although loss and gradient were
  # finite, so that no checkpoint is written after it.
  step_metrics = {**{f"sum_{k}": v for k, v in sums.items()}, "loss": loss,
                  "grad_norm": optax.global_norm(grads), "param_norm": optax.global_norm(params)}
  released = optimizer_lib.hold_released(opt_state)
  if released is not None:  # The saliency hold (optimizer.saliency_delay_loss).
    step_metrics["saliency_released"] = released.astype(jnp.float32)
  new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                            opt_state=opt_state)
  return new_state, step_metrics


def eval_step(state: TrainState, batch: Mapping[str, jax.Array], *, graphdef: nnx.GraphDef,
              task: str, num_panels: int) -> tuple[dict[str, jax.Array], dict[str, Any]]:
  """The metric sums of one evaluation batch, and its first examples for the panels.

  Args:
    state: the state to evaluate.
    batch: an evaluation batch; regression (gaze) batches may add "tablet" bool `[B]`, which
      splits every metric into phones and tablets.
    graphdef: the model in inference mode (`nnx.graphdef(model)` after `model.eval()`).
    task: one of `metrics.TASKS`.
    num_panels: how many examples to return.

  Returns:
    `(sums, examples)`: `metrics.batch_metrics`'s sums (with a sampler's uniform view, also
    each view's "top1_warped" and "top1_uniform"), and the first `num_panels` inputs,
    labels, outputs and sampler extras (`PANEL_EXTRAS`; detection adds the decoded boxes).
  """
  model = nnx.merge(graphdef, state.params, state.model_state)
  outputs, extras = model(batch["image"])
  groups = ({"phone": ~batch["tablet"], "tablet": batch["tablet"]} if "tablet" in batch
            else None)
  labels = metrics_lib.targets(batch, task)
  sums = metrics_lib.batch_metrics(outputs, labels, batch["mask"], task=task, groups=groups)
  if "view_outputs" in extras:  # The sampler's uniform view: what each view reads alone.
    for name, view in zip(("warped", "uniform"), extras["view_outputs"]):
      sums[f"top1_{name}"] = metrics_lib.batch_metrics(view, labels, batch["mask"],
                                                       task=task)["top1"]
  examples = {"image": batch["image"], "label": labels, "output": outputs,
              **{k: v for k, v in extras.items() if k in PANEL_EXTRAS}}
  if task == "detection":
    stride = batch["image"].shape[1] / outputs.shape[1]
    examples["detections"] = dense_metrics.decode_detections(outputs, stride=stride)
  examples = jax.tree.map(lambda x: x[:num_panels], examples)
  return sums, examples
