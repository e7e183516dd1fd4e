"""The optimizer against PyTorch's SGD with the authors' parameter groups, and the schedules.

Reference: `torch.optim.SGD(param_groups, momentum, weight_decay)` with one `LambdaLR` factor per
group is how the authors' PyTorch code trains (`torch.optim.AdamW` likewise for "adamw"); the
schedule values are worked out by hand.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch

from saliency_jax.train import optimizer


def _opt_config(**overrides):
  config = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
      "weight_decay": 1e-2,
      "schedule": "step", "decay_epochs": 2.0, "decay_factor": 0.1, "warmup_epochs": 0.0,
      "restart_task_schedule_after_blur": True,
      "lr_multipliers": {"task": 1.0, "saliency_head": 0.01, "saliency_backbone": 0.001},
      "grad_clip_norm": 0.0, "clip_per_group": False, "saliency_delay": 0.0,
      "saliency_delay_loss": 0.0})
  config.update(overrides)
  return config


def test_learning_rate_schedule_values():
  step = optimizer.learning_rate_schedule(base=1.0, kind="step", total_steps=100,
                                          steps_per_epoch=10, decay_epochs=3, decay_factor=0.1)
  # Epochs 0-2 at 1, 3-5 at 0.1, 6-8 at 0.01.
  np.testing.assert_allclose([step(0), step(29), step(30), step(59), step(60)],
                             [1, 1, 0.1, 0.1, 0.01], rtol=1e-6)
  restarted = optimizer.learning_rate_schedule(base=1.0, kind="step", total_steps=100,
                                               steps_per_epoch=10, decay_epochs=3,
                                               decay_factor=0.1, restart_step=20)
  np.testing.assert_allclose([restarted(0), restarted(49), restarted(50), restarted(80)],
                             [1, 1, 0.1, 0.01], rtol=1e-6)
  # Tiny data: 2.5 steps per epoch, so the rate drops every 7.5 steps (from steps 8 and 15 on).
  fractional = optimizer.learning_rate_schedule(base=1.0, kind="step", total_steps=100,
                                                steps_per_epoch=2.5, decay_epochs=3,
                                                decay_factor=0.1)
  np.testing.assert_allclose([fractional(7), fractional(8), fractional(14), fractional(15)],
                             [1, 0.1, 0.1, 0.01], rtol=1e-6)
  cosine = optimizer.learning_rate_schedule(base=2.0, kind="cosine", total_steps=100,
                                            steps_per_epoch=10)
  # 2 * (1 + cos(pi * s / 100)) / 2.
  np.testing.assert_allclose([cosine(0), cosine(50), cosine(100), cosine(150)],
                             [2.0, 1.0, 0.0, 0.0], atol=1e-6)
  # Restarted at 20: 2 until then, then the cosine over the remaining 80 steps.
  cosine = optimizer.learning_rate_schedule(base=2.0, kind="cosine", total_steps=100,
                                            steps_per_epoch=10, restart_step=20)
  np.testing.assert_allclose([cosine(10), cosine(20), cosine(60), cosine(100)],
                             [2.0, 2.0, 1.0, 0.0], atol=1e-6)
  warm = optimizer.learning_rate_schedule(base=1.0, kind="constant", total_steps=100,
                                          steps_per_epoch=10, warmup_epochs=1)
  np.testing.assert_allclose([warm(0), warm(4), warm(9), warm(50)], [0.1, 0.5, 1.0, 1.0],
                             rtol=1e-6)


def test_schedule_rejects_unknown_kind():
  with pytest.raises(ValueError, match="kind"):
    optimizer.learning_rate_schedule(base=1.0, kind="linear", total_steps=10, steps_per_epoch=1)


@pytest.mark.parametrize("nesterov, delay", [(False, 0.0), (True, 0.0), (False, 0.5)])
def test_matches_torch_sgd_with_parameter_groups(nesterov, delay):
  rng = np.random.default_rng(0)
  shapes = {"task": (3, 4), "saliency_head": (5,), "saliency_backbone": (2, 2)}
  init = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
           for _ in range(8)]
  config = _opt_config(nesterov=nesterov, saliency_delay=delay)
  total, blur = 8, 3
  schedules = optimizer.group_schedules(config, total_steps=total, steps_per_epoch=1.0,
                                        blur_steps=blur)
  labels = {k: k for k in shapes}
  tx = optimizer.make_optimizer(config, param_labels=labels, schedules=schedules)
  params = jax.tree.map(jnp.asarray, init)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
    params = optax.apply_updates(params, updates)

  tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
  groups = [{"params": [tensors[k]], "lr": 0.1 * config.lr_multipliers[k]} for k in shapes]
  sgd = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=nesterov)

  def factor(step, restart):  # x0.1 every 2 steps, counted from `restart`.
    return 0.1 ** (max(step - restart, 0) // 2)

  # The saliency groups' rate is 0 for the first `delay` of the run (4 of 8 steps), momentum
  # buffers filling meanwhile as in torch's SGD.
  lambdas = [lambda s, r=(blur if k == "task" else 0), d=(0 if k == "task" else delay * total):
             factor(s, r) * (s >= d) for k in shapes]
  scheduler = torch.optim.lr_scheduler.LambdaLR(sgd, lambdas)
  for g in grads:
    for k, t in tensors.items():
      t.grad = torch.tensor(g[k])
    sgd.step()
    scheduler.step()
  for k in shapes:
    np.testing.assert_allclose(np.asarray(params[k]), tensors[k].detach().numpy(),
                               rtol=1e-5, atol=1e-6, err_msg=k)


def _adamw_run(config, shapes, init, grads, losses):
  schedules = optimizer.group_schedules(config, total_steps=len(grads), steps_per_epoch=1.0,
                                        blur_steps=0)
  tx = optimizer.make_optimizer(config, param_labels={k: k for k in shapes},
                                schedules=schedules, chance_loss=1.0)
  params = jax.tree.map(jnp.asarray, init)
  state = tx.init(params)
  trajectory = []
  for g, loss in zip(grads, losses):
    updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params, value=loss)
    params = optax.apply_updates(params, updates)
    trajectory.append(jax.tree.map(np.asarray, params))
  return trajectory


def _adamw_problem(steps=6):
  rng = np.random.default_rng(1)
  shapes = {"task": (3, 4), "saliency_head": (5,), "saliency_backbone": (2, 2)}
  init = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
  grads = [{k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
           for _ in range(steps)]
  return shapes, init, grads


def _torch_adamw(config, shapes, init, grads):
  """PyTorch's AdamW on the same groups, with the config's rate, b1 (`momentum`) and decay."""
  tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
  groups = [{"params": [tensors[k]], "lr": config.learning_rate * config.lr_multipliers[k]}
            for k in shapes]
  adamw = torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.momentum, 0.999),
                            eps=1e-8, weight_decay=config.weight_decay)
  for g in grads:
    for k, t in tensors.items():
      t.grad = torch.tensor(g[k])
    adamw.step()
  return {k: t.detach().numpy() for k, t in tensors.items()}


def test_adamw_matches_torch_adamw_with_parameter_groups():
  shapes, init, grads = _adamw_problem()
  config = _opt_config(name="adamw", learning_rate=0.01, momentum=0.8, weight_decay=0.1,
                       schedule="constant")
  final = _adamw_run(config, shapes, init, grads, losses=[1.0] * len(grads))[-1]
  expected = _torch_adamw(config, shapes, init, grads)
  for k in shapes:
    np.testing.assert_allclose(final[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_adamw_holds_the_saliency_groups_still_until_released():
  shapes, init, grads = _adamw_problem()
  # The hold's level is 0.99 of chance (1.0); its running mean (decay 0.95) of the losses below
  # is 1.0, 1.0, 1.0, then 0.975: released at the fourth step.
  config = _opt_config(name="adamw", learning_rate=0.01, momentum=0.8, weight_decay=0.1,
                       schedule="constant", saliency_delay_loss=0.99)
  trajectory = _adamw_run(config, shapes, init, grads, losses=[1.0, 1.0, 1.0, 0.5, 0.5, 0.5])
  for group in ("saliency_head", "saliency_backbone"):
    for step in range(3):  # No step and no weight decay while held.
      np.testing.assert_array_equal(trajectory[step][group], init[group], err_msg=group)
    assert np.all(trajectory[3][group] != init[group]), group
  # The task group is never held: PyTorch's AdamW step for step.
  expected = _torch_adamw(config, shapes, init, grads)
  np.testing.assert_allclose(trajectory[-1]["task"], expected["task"], rtol=1e-5, atol=1e-6)


def test_nesterov_is_sgds_alone():
  from saliency_jax.train import base_config, config as config_lib
  config = base_config()
  config.optimizer.name = "adamw"
  config.optimizer.nesterov = True
  with pytest.raises(config_lib.ConfigError, match="optimizer.nesterov"):
    config_lib.validate_config(config)
  config.optimizer.nesterov = False
  config.optimizer.name = "adam"
  with pytest.raises(config_lib.ConfigError, match="optimizer.name"):
    config_lib.validate_config(config)


def test_zero_multiplier_freezes_group_and_clipping_is_global():
  config = _opt_config(lr_multipliers={"task": 1.0, "saliency_head": 0.0,
                                       "saliency_backbone": 0.0},
                       weight_decay=0.0, momentum=0.0, grad_clip_norm=1.0, schedule="constant")
  schedules = optimizer.group_schedules(config, total_steps=4, steps_per_epoch=1.0, blur_steps=0)
  params = {"task": jnp.zeros(2), "saliency_head": jnp.ones(3), "saliency_backbone": jnp.ones(1)}
  tx = optimizer.make_optimizer(config, param_labels={k: k for k in params},
                                schedules=schedules)
  grads = {"task": jnp.array([3.0, 0.0]), "saliency_head": jnp.array([0.0, 4.0, 0.0]),
           "saliency_backbone": jnp.zeros(1)}
  updates, _ = tx.update(grads, tx.init(params), params)
  # Global norm 5 -> gradients scaled by 1/5 before the groups; frozen groups get no update.
  np.testing.assert_allclose(updates["task"], [-0.1 * 3 / 5, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(updates["saliency_head"], np.zeros(3))
  np.testing.assert_array_equal(updates["saliency_backbone"], np.zeros(1))


def test_clipping_per_group_scales_each_group_by_its_own_norm():
  """task gradient norm 5 (clipped to 1: scale 1/5), saliency head norm 0.5 (below the clip:
  unchanged), whatever the other group's norm; the global clip would scale both by 1/5.025."""
  config = _opt_config(lr_multipliers={"task": 1.0, "saliency_head": 1.0,
                                       "saliency_backbone": 1.0},
                       weight_decay=0.0, momentum=0.0, grad_clip_norm=1.0, schedule="constant",
                       clip_per_group=True)
  schedules = optimizer.group_schedules(config, total_steps=4, steps_per_epoch=1.0, blur_steps=0)
  params = {"task": jnp.zeros(2), "saliency_head": jnp.ones(2), "saliency_backbone": jnp.ones(1)}
  tx = optimizer.make_optimizer(config, param_labels={k: k for k in params},
                                schedules=schedules)
  grads = {"task": jnp.array([3.0, 4.0]), "saliency_head": jnp.array([0.3, 0.4]),
           "saliency_backbone": jnp.array([2.0])}
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["task"], [-0.1 * 3 / 5, -0.1 * 4 / 5], rtol=1e-6)
  np.testing.assert_allclose(updates["saliency_head"], [-0.1 * 0.3, -0.1 * 0.4], rtol=1e-6)
  np.testing.assert_allclose(updates["saliency_backbone"], [-0.1 * 1.0], rtol=1e-6)


def test_hold_passes_nothing_until_the_running_mean_falls_below_the_threshold_then_everything():
  hold = optimizer.hold_until_loss_below(1.0, decay=0.5)
  updates = {"w": jnp.array([1.0, -2.0])}
  state = hold.init(updates)
  # The running mean by hand: 3 (the first value), then 0.5 * mean + 0.5 * value.
  values = [3.0, 1.0, 0.0, 0.5, 9.0]
  means = [3.0, 2.0, 1.0, 0.75, 0.75 * 0.5 + 4.5]
  released = [False, False, False, True, True]  # 1.0 is not below 1.0; once released, for good.
  for value, mean, passes in zip(values, means, released):
    got, state = hold.update(updates, state, value=jnp.float32(value))
    np.testing.assert_allclose(state.mean_loss, mean, rtol=1e-6)
    assert bool(state.released) == passes
    np.testing.assert_array_equal(got["w"], updates["w"] if passes else np.zeros(2))
  with pytest.raises(ValueError, match="decay"):
    optimizer.hold_until_loss_below(1.0, decay=1.0)


def test_held_saliency_groups_neither_decay_nor_gather_momentum_and_then_train_from_zero():
  """The task group trains from the first step; the saliency groups stay where they are until
  the loss's running mean falls below the fraction of chance, then follow SGD with momentum
  and weight decay started at that step (expected values: optax's own SGD chain from there)."""
  config = _opt_config(saliency_delay_loss=0.5, schedule="constant")
  schedules = optimizer.group_schedules(config, total_steps=8, steps_per_epoch=1.0, blur_steps=0)
  rng = np.random.default_rng(0)
  shapes = {"task": (3,), "saliency_head": (2,), "saliency_backbone": (2,)}
  params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
  tx = optimizer.make_optimizer(config, param_labels={k: k for k in shapes},
                                schedules=schedules, chance_loss=2.0)
  state = tx.init(params)
  # Chance 2.0 x 0.5: released once the mean is below 1.0 (decay 0.95: the third step's 0.0
  # after two steps at 1.0 gives 0.95; the fourth's 0.0 gives 0.9025).
  values = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
  grads = [{k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in shapes.items()}
           for _ in values]
  start = dict(params)
  with pytest.raises(TypeError):  # The hold needs the loss.
    tx.update(grads[0], state, params)
  history = []
  for g, value in zip(grads, values):
    updates, state = tx.update(g, state, params, value=jnp.float32(value))
    params = optax.apply_updates(params, updates)
    history.append(params)
  released_at = 2  # The third step.
  for k in ("saliency_head", "saliency_backbone"):
    for step in range(released_at):
      np.testing.assert_array_equal(history[step][k], start[k])
    plain = optax.chain(optax.add_decayed_weights(config.weight_decay),
                        optax.sgd(schedules[k], momentum=config.momentum))
    expected, plain_state = start[k], plain.init(start[k])
    for g in grads[released_at:]:
      u, plain_state = plain.update(g[k], plain_state, expected)
      expected = optax.apply_updates(expected, u)
    np.testing.assert_allclose(params[k], expected, rtol=1e-5, atol=1e-7, err_msg=k)
  assert not np.array_equal(history[0]["task"], start["task"])
  with pytest.raises(ValueError, match="chance_loss"):
    optimizer.make_optimizer(config, param_labels={k: k for k in shapes}, schedules=schedules)
