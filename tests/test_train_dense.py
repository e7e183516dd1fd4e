"""The dense model trained end to end: segmentation against its uniform baseline, detection
with the fixed box prior, and the config checks that tie dense data to the dense model."""
import functools
import json
import os

import jax
import numpy as np
from PIL import Image
import pytest

from flax import nnx
import optax

from saliency_jax import data
from saliency_jax import train
from saliency_jax.train import config as config_lib
from saliency_jax.train import dense_metrics
from saliency_jax.train import metrics
from saliency_jax.train import priors
from saliency_jax.train import steps
from tiny_experiments import load_config, tiny


def test_segmentation_trains_and_compares_with_its_uniform_baseline(tmp_path, capsys):
  config = tiny(load_config("dense_scenes", None))
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  baseline = results["uniform"]
  assert results["task"] == baseline["task"] == "segmentation"
  assert baseline["label"] == "uniform" and baseline["workdir"] == os.path.join(workdir,
                                                                                "uniform")
  for run in (results, baseline):
    evaluation = run["eval"]
    assert evaluation["count"] == 8 and np.isfinite(evaluation["loss"])
    assert 0 <= evaluation["miou"] <= 1 and 0 <= evaluation["pixel_accuracy"] <= 1
    # The tiny scenes hold small and large objects: both region scores exist.
    assert 0 <= evaluation["miou_small"] <= 1 and 0 <= evaluation["miou_large"] <= 1
  printed = capsys.readouterr().out
  assert "mIoU" in printed and "points of small-object mIoU" in printed
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["eval"] == results["eval"]
  # input | saliency | grid | sampled | predicted, warped | predicted | target; the uniform
  # model has no saliency.
  for run, tiles in ((results, 7), (baseline, 6)):
    step_dir = os.path.join(run["workdir"], "panels", "step_0000001")
    panel = np.asarray(Image.open(os.path.join(step_dir, "example_0.png")))
    assert panel.shape[1] == 224 * tiles


def test_detection_with_the_box_prior_trains_and_keeps_the_prior_in_its_state(tmp_path):
  config = tiny(load_config("dense_scenes_detection", None))
  # The prior in place of the supervised network, as configs/dense_scenes_prior.py does; the
  # box sizes through the warp, so that the step and the metrics run that path too.
  config.model.update(saliency="prior", saliency_supervision=0.0, warp_gradient=True,
                      warped_box_sizes=True)
  config.compare_with_uniform = False
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["task"] == "detection"
  evaluation = results["eval"]
  assert evaluation["count"] == 8 and np.isfinite(evaluation["loss"])
  assert {"ap", "ap_small", "ap_large"} <= set(evaluation)
  assert all(0 <= evaluation[k] <= 1 for k in ("ap", "ap_small", "ap_large"))
  # The prior is the KDE of the training boxes, a constant of the model, not trained.
  prior = priors.box_prior(config)
  assert prior.shape == (9, 9) and float(prior.sum()) == pytest.approx(1.0, abs=1e-5)
  model = train.create_model(config, num_outputs=4, prior=prior)
  np.testing.assert_array_equal(model.prior.value, prior)
  with pytest.raises(ValueError, match="saliency 'prior' needs prior="):
    train.create_model(config, num_outputs=4)


@pytest.mark.parametrize("change,message", [
    (lambda c: setattr(c.model, "name", "saliency_sampler"),
     "config.model.name: expected 'zoom_unzoom' for the dense dataset 'dense_scenes'"),
    (lambda c: setattr(c.data, "name", "synthetic"),
     "config.model.name: expected a model of labels for data.name 'synthetic'"),
    (lambda c: setattr(c, "blur_epochs", 1.0), "config.blur_epochs: expected 0 for zoom_unzoom"),
    (lambda c: c.data.update(image_size=276, eval_resize=276),
     r"config.data.image_size: expected a multiple of model.out_stride \(8\)"),
    (lambda c: setattr(c.model, "saliency", "none"),
     "config.compare_with_uniform: expected False when config.model.saliency is already 'none'"),
    (lambda c: setattr(c.model, "dense_stages", ("layer9",)), "config.model.dense_stages"),
    (lambda c: c.model.update(saliency="prior", saliency_supervision=1.0),
     "config.model.saliency_supervision: expected a finite number >= 0, above 0 only for "
     "zoom_unzoom with a saliency network"),
    (lambda c: setattr(c.model, "saliency_supervision", -1.0),
     "config.model.saliency_supervision"),
    (lambda c: setattr(c.model, "warp_gradient", False),
     "config.model.warp_gradient: expected True, or False only for saliency_sampler or "
     "zoom_unzoom with saliency_supervision > 0"),
    (lambda c: setattr(c.model, "segmentation_auxiliary", 1.0),
     "config.model.segmentation_auxiliary: expected a finite number >= 0, above 0 only for "
     "zoom_unzoom with dense_head 'detection'"),
    (lambda c: setattr(c.model, "saliency_supervision_mass", "inverse_area"),
     r"config.model.saliency_supervision_mass: expected one of \('equal', 'inverse_area'\), "
     "other than 'equal' only for zoom_unzoom with saliency_supervision > 0"),
    (lambda c: c.model.update(saliency_supervision=1.0, saliency_supervision_mass="area"),
     "config.model.saliency_supervision_mass"),
])
def test_dense_configs_are_checked_before_anything_is_written(tmp_path, change, message):
  config = tiny(load_config("dense_scenes", None))
  change(config)
  with pytest.raises(config_lib.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def _loss_difference(config, term, **step_options):
  """One train step of the tiny dense model with the weight `term` at 0 and at 2, from the same
  state and batch: the two losses' difference, and the extras the model computes in training
  mode with the batch."""
  loader = data.make_loader(config.data, split="train", global_batch_size=config.batch_size,
                            mesh=train.make_mesh(), seed=0)
  batch = jax.tree.map(np.asarray, next(iter(loader)))  # On one device, as the model.
  loader.close()
  model = train.create_model(config, num_outputs=4)
  model.train()
  graph, params, model_state = nnx.split(model, nnx.Param, ...)
  tx = optax.sgd(0.0)
  state = steps.initial_state(params, model_state, tx, seed=0)
  losses = [float(jax.jit(functools.partial(
      steps.train_step, blur=False, graphdef=graph, tx=tx, **step_options, **{term: weight}))(
          state, batch)[1]["loss"]) for weight in (0.0, 2.0)]
  _, extras = nnx.merge(graph, params, model_state, copy=True)(batch["image"])
  return losses[1] - losses[0], extras, batch


def _batch_mean(values, batch):
  weights = np.asarray(batch["mask"], np.float32)
  return float(np.sum(weights * np.asarray(values)) / np.sum(weights))


@pytest.mark.parametrize("box_mass", ["equal", "inverse_area"])
def test_saliency_supervision_adds_the_maps_box_loss_to_the_training_loss(box_mass):
  # The loss differs by the weight times the batch's mean `box_saliency_loss` of the map.
  config = tiny(load_config("dense_scenes", None))
  difference, extras, batch = _loss_difference(config, "saliency_supervision",
                                               task="segmentation",
                                               saliency_supervision_mass=box_mass)
  mean_kl = _batch_mean(dense_metrics.box_saliency_loss(
      extras["saliency"], metrics.targets(batch, "segmentation"), batch["image"].shape[1:3],
      box_mass=box_mass), batch)
  assert mean_kl > 0.01
  np.testing.assert_allclose(difference, 2.0 * mean_kl, rtol=1e-3)


def test_the_segmentation_auxiliary_adds_its_outputs_segmentation_loss():
  # The loss differs by the weight times the batch's mean segmentation loss (the config's kind)
  # of the detection head's extra outputs.
  config = tiny(load_config("dense_scenes", None))
  config.model.update(dense_head="detection", segmentation_auxiliary=1.0,
                      segmentation_loss="object_balanced")
  difference, extras, batch = _loss_difference(config, "segmentation_auxiliary",
                                               task="detection",
                                               segmentation_loss="object_balanced")
  mean = _batch_mean(dense_metrics.segmentation_loss(
      extras["segmentation_outputs"], metrics.targets(batch, "detection"),
      kind="object_balanced"), batch)
  assert mean > 0.1
  np.testing.assert_allclose(difference, 2.0 * mean, rtol=1e-3)


def test_the_uniform_baseline_drops_the_box_targets_masses():
  from saliency_jax.train import trainer  # pylint: disable=import-outside-toplevel
  config = tiny(load_config("dense_scenes", None))
  config.model.update(saliency_supervision=1.0, saliency_supervision_mass="inverse_area")
  config_lib.validate_config(config)
  uniform = trainer.uniform_baseline(config).model
  assert (uniform.saliency, uniform.saliency_supervision, uniform.saliency_supervision_mass) == (
      "none", 0.0, "equal")


def test_the_detail_prior_alone_compares_with_a_baseline_without_it():
  from saliency_jax.train import trainer  # pylint: disable=import-outside-toplevel
  config = tiny(load_config("dense_scenes", None))
  config.model.saliency = "none"
  config.model.detail_prior = True
  config_lib.validate_config(config)  # The detail prior alone is not the uniform baseline.
  uniform = trainer.uniform_baseline(config)
  assert uniform.model.saliency == "none" and not uniform.model.detail_prior
  assert train.create_model(uniform, num_outputs=4).uniform
  assert not train.create_model(config, num_outputs=4).uniform
