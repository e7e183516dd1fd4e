"""SGD with the authors' per-group learning rates and schedules, as an optax transformation.

The saliency sampler trains three groups of parameters at very different speeds (as in the authors' code):
the task network at the base rate, the 1x1 saliency head at 0.01 of it and the pretrained
saliency backbone at 0.001. The update rule is PyTorch's `SGD(momentum, weight_decay)`:
`g += wd * p; buf = momentum * buf + g; p -= lr * buf`, which optax's
`add_decayed_weights` + `sgd(momentum=...)` computes exactly. `optimizer.name="adamw"` swaps
the rule for PyTorch's `AdamW` (decoupled weight decay), groups and schedules unchanged.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

Schedule = Callable[[jax.Array], jax.Array]


def learning_rate_schedule(*, base: float, kind: str, total_steps: int, steps_per_epoch: float,
                           decay_epochs: float = 30.0, decay_factor: float = 0.1,
                           warmup_epochs: float = 0.0, restart_step: int = 0) -> Schedule:
  """The learning rate as a function of the optimizer step.

  Args:
    base: the peak learning rate.
    kind: "constant", "step" (multiply by `decay_factor` every `decay_epochs`) or "cosine"
      (from `base` at `restart_step` to 0 at `total_steps`).
    total_steps: length of the run, in steps.
    steps_per_epoch: steps in one epoch (may be fractional for tiny data sets).
    decay_epochs: period of the "step" schedule.
    decay_factor: factor of the "step" schedule.
    warmup_epochs: linear ramp from `base / warmup_steps` to `base` over the first steps.
    restart_step: the decay counts from this step on (the rate is `base` before it); the
      authors restart the task network's schedule when the blur warm-up ends.

  Returns:
    `schedule(step) -> lr`, jittable, float32 scalar.
  """
  if kind not in ("constant", "step", "cosine"):
    raise ValueError(f"kind: expected 'constant', 'step' or 'cosine', got {kind!r}.")
  if total_steps < 1 or steps_per_epoch <= 0:
    raise ValueError(f"total_steps and steps_per_epoch: expected positive values, got "
                     f"{total_steps} and {steps_per_epoch}.")
  decay_steps = max(decay_epochs * steps_per_epoch, 1.0)
  warmup_steps = warmup_epochs * steps_per_epoch
  restart_step = min(max(restart_step, 0), total_steps - 1)
  if kind == "constant":
    decay = optax.constant_schedule(base)
  elif kind == "step":
    decay = optax.exponential_decay(base, transition_steps=decay_steps,
                                    decay_rate=decay_factor, staircase=True)
  else:
    decay = optax.cosine_decay_schedule(base, decay_steps=total_steps - restart_step)
  # The decay counts from the restart on (`join_schedules` shifts the step), at `base` before.
  decayed = optax.join_schedules([optax.constant_schedule(base), decay], [restart_step])

  def schedule(step: jax.Array) -> jax.Array:
    lr = decayed(jnp.asarray(step, jnp.int32))
    if warmup_steps > 0:
      # The authors' ramp scales whatever the decay gives, which no optax schedule composes.
      lr = lr * jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1.0) / warmup_steps)
    return jnp.asarray(lr, jnp.float32)

  return schedule


def group_schedules(opt_config: ml_collections.ConfigDict, *, total_steps: int,
                    steps_per_epoch: float, blur_steps: int) -> dict[str, Schedule]:
  """One learning-rate schedule per parameter group, multipliers applied.

  Args:
    opt_config: `config.optimizer`.
    total_steps: length of the run.
    steps_per_epoch: steps in one epoch.
    blur_steps: steps of the blur warm-up; the task group's decay restarts there when
      `opt_config.restart_task_schedule_after_blur`.

  Returns:
    `{"task": schedule, "saliency_head": schedule, "saliency_backbone": schedule}`; the
    saliency groups' rates are 0 for the first `opt_config.saliency_delay` of the run.
  """
  schedules = {}
  delay_steps = int(opt_config.saliency_delay * total_steps)
  for group, multiplier in dict(opt_config.lr_multipliers).items():
    restart = blur_steps if (group == "task" and opt_config.restart_task_schedule_after_blur) else 0
    schedule = learning_rate_schedule(
        base=opt_config.learning_rate * multiplier, kind=opt_config.schedule,
        total_steps=total_steps, steps_per_epoch=steps_per_epoch,
        decay_epochs=opt_config.decay_epochs, decay_factor=opt_config.decay_factor,
        warmup_epochs=opt_config.warmup_epochs, restart_step=restart)
    if group != "task" and delay_steps > 0:
      schedule = _delayed(schedule, delay_steps)
    schedules[group] = schedule
  return schedules


def _delayed(schedule: Schedule, delay_steps: int) -> Schedule:
  """0 before `delay_steps`, then `schedule` as it is (not shifted, unlike optax's
  `join_schedules`: the group joins the run's decay where the run is)."""
  return lambda step: jnp.where(jnp.asarray(step) < delay_steps, jnp.float32(0.0), schedule(step))


class HoldState(NamedTuple):
  """`hold_until_loss_below`'s state: the running mean of the loss (NaN before the first
  step) and whether the updates have been released."""
  mean_loss: jax.Array
  released: jax.Array


def hold_until_loss_below(threshold: float, *,
                          decay: float = 0.95) -> optax.GradientTransformationExtraArgs:
  """Zero updates until the running mean of the loss falls below `threshold`, then the updates
  as they are, for good.

  The loss comes as the `value` keyword of `update` (as for `optax.contrib.reduce_on_plateau`);
  the step that brings the mean below `threshold` is the first one whose updates pass.

  Args:
    threshold: the release level of the loss's running mean.
    decay: the running mean's: `mean = decay * mean + (1 - decay) * value`, from the first
      value.
  """
  if not 0 <= decay < 1:
    raise ValueError(f"decay: expected a number in [0, 1), got {decay}.")

  def init_fn(params):
    del params
    return HoldState(mean_loss=jnp.full((), jnp.nan, jnp.float32),
                     released=jnp.zeros((), jnp.bool_))

  def update_fn(updates, state, params=None, *, value, **extra_args):
    del params, extra_args
    value = jnp.asarray(value, jnp.float32)
    mean = jnp.where(jnp.isnan(state.mean_loss), value,
                     decay * state.mean_loss + (1 - decay) * value)
    released = state.released | (mean < threshold)
    updates = jax.tree.map(lambda u: jnp.where(released, u, jnp.zeros_like(u)), updates)
    return updates, HoldState(mean_loss=mean, released=released)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def hold_released(opt_state: Any) -> jax.Array | None:
  """Whether `hold_until_loss_below` has released its updates (a bool scalar), or None if the
  optimizer has no hold. The saliency groups' holds see the same loss and agree."""
  holds = [leaf for leaf in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, HoldState))
           if isinstance(leaf, HoldState)]
  return holds[0].released if holds else None


def make_optimizer(opt_config: ml_collections.ConfigDict, *, param_labels: Any,
                   schedules: Mapping[str, Schedule],
                   chance_loss: float | None = None) -> optax.GradientTransformation:
  """SGD with momentum and weight decay (or AdamW), one learning-rate schedule per parameter
  group.

  Its `update` takes the step's loss of the model's prediction as `value=` (the saliency
  groups' hold reads it; without the hold it is ignored).

  Args:
    opt_config: `config.optimizer` (name, momentum, nesterov, weight_decay, lr_multipliers,
      grad_clip_norm, clip_per_group, saliency_delay_loss).
    param_labels: a pytree like the parameters whose leaves are group names ("task",
      "saliency_head", "saliency_backbone"), or a function of the parameters returning one.
    schedules: the learning rate of each group (`group_schedules`).
    chance_loss: the loss of a prediction at chance (the log of the number of classes), which
      `opt_config.saliency_delay_loss` is a fraction of; needed when that is > 0.

  Returns:
    An optax transformation; a group whose multiplier is 0 is frozen (no momentum buffer).
  """
  multipliers = dict(opt_config.lr_multipliers)
  if set(multipliers) != set(schedules):
    raise ValueError(f"schedules: expected one per group {sorted(multipliers)}, got "
                     f"{sorted(schedules)}.")
  hold = None
  if opt_config.saliency_delay_loss > 0:
    if chance_loss is None or not chance_loss > 0:
      raise ValueError(f"chance_loss: expected a positive loss for the saliency hold "
                       f"(optimizer.saliency_delay_loss), got {chance_loss}.")
    hold = opt_config.saliency_delay_loss * chance_loss
  clip = opt_config.grad_clip_norm
  transforms = {}
  for group, multiplier in multipliers.items():
    if multiplier == 0:
      transforms[group] = optax.set_to_zero()
      continue
    held = (hold_until_loss_below(hold) if hold is not None and group != "task" else
            optax.identity())
    if opt_config.name == "adamw":
      # Held after the moment estimates, which gather while the group is held, and before the
      # decay and the step: a held group does not move.
      update = optax.chain(
          optax.scale_by_adam(b1=opt_config.momentum, b2=0.999, eps=1e-8),
          optax.add_decayed_weights(opt_config.weight_decay), held,
          optax.scale_by_learning_rate(schedules[group]))
    else:
      # Held after the weight decay and before the momentum: a held group neither decays nor
      # gathers momentum.
      update = optax.chain(
          optax.add_decayed_weights(opt_config.weight_decay), held,
          optax.sgd(schedules[group], momentum=opt_config.momentum or None,
                    nesterov=opt_config.nesterov))
    transforms[group] = optax.chain(
        # multi_transform gives each chain its group's gradient alone.
        optax.clip_by_global_norm(clip) if clip > 0 and opt_config.clip_per_group else
        optax.identity(),
        update)
  tx = optax.multi_transform(transforms, param_labels)
  if clip > 0 and not opt_config.clip_per_group:
    # Clipping sees the whole gradient, so it goes before the split into groups.
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx
