"""The trainer end to end on tiny variants of every experiment config."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from saliency_jax import train
from saliency_jax.train import trainer
from conftest import final_state
from tiny_experiments import load_config, synthetic_batch, tiny, write_gazecapture
from tree_checks import assert_layouts_agree

# One per experiment file; the Table 2 baselines of configs/inat2017.py:<model> are the
# synthetic baselines' models with the iNaturalist optimizer, covered by those below.
# The default config trains the sampler and then configs/uniform.py's model (test_configs.py
# checks that the two configs differ only there), so "default" covers both.
STEP_CONFIGS = [
    ("default", None), ("stn_affine", None), ("stn_tps", None), ("grid_estimator", None),
    ("cam_crop", None), ("deformable", None), ("cub200", None), ("inat2017", None),
    ("inat2017_depth", "6"), ("gaze", None),
]


@pytest.mark.parametrize("name,argument", STEP_CONFIGS)
def test_one_training_step_end_to_end(tmp_path, capsys, name, argument):
  gaze_dir = write_gazecapture(str(tmp_path / "gaze")) if name == "gaze" else None
  config = tiny(load_config(name, argument), gaze_dir=gaze_dir)
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  if name == "default":
    baseline = results["uniform"]
    assert baseline["model"] == "uniform" and baseline["workdir"] == os.path.join(workdir,
                                                                                  "uniform")
    printed = capsys.readouterr().out
    assert "saliency_sampler" in printed and "uniform" in printed and "points of top-1" in printed
    assert os.path.join(workdir, "panels") in printed

  evaluation = results["eval"]
  assert evaluation["count"] == (4 if name == "gaze" else 8)
  assert np.isfinite(evaluation["loss"]) and np.isfinite(results["train"]["loss"])
  if name == "gaze":
    assert results["task"] == "regression" and evaluation["distance"] > 0
    # The test recordings are iPhone ones: the per-device error is all phones, no tablets.
    assert evaluation["count/phone"] == 4 and "distance/tablet" not in evaluation
    assert evaluation["distance/phone"] == pytest.approx(evaluation["distance"])
  else:
    assert 0 <= evaluation["top1"] <= evaluation["top5"] <= 1
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["eval"] == evaluation
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1"]
  panels = sorted(os.listdir(os.path.join(workdir, "panels", "step_0000001")))
  assert panels == ["example_0.png", "example_1.png"]
  panel = np.asarray(Image.open(os.path.join(workdir, "panels", "step_0000001", panels[0])))
  has_grid = config.model.name not in ("uniform", "deformable")
  assert panel.shape[1] == 224 * (4 if config.model.name == "saliency_sampler" else
                                  3 if has_grid else 2)
  assert any(f.startswith("events.out.tfevents") for f in
             os.listdir(os.path.join(workdir, "tensorboard")))


def test_the_samplers_saliency_supervision_trains_end_to_end(tmp_path):
  """`model.saliency_supervision` on the classification sampler reaches the loss through the
  model's "penalty" (the dense targets' box loss is for dense tasks only), and the uniform
  baseline trains without it."""
  config = tiny(load_config("default", None))
  config.model.saliency_supervision = 1.0
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(results["train"]["loss"]) and 0 <= results["eval"]["top1"] <= 1
  assert results["uniform"]["model"] == "uniform"


def _experiment(config, mesh):
  return train.build_experiment(config, mesh=mesh, num_outputs=6, task="classification",
                                  total_steps=4, steps_per_epoch=4.0, blur_steps=2)


def test_step_on_eight_devices_equals_one_device_and_bfloat16_is_close():
  devices = jax.devices()
  assert len(devices) == 8, "tests/conftest.py forces 8 host devices"
  config = tiny(load_config("default"))
  # SGD, not the demo's AdamW: Adam's step is about the learning rate wherever the gradient is
  # rounding noise (the saliency head's bias, whose exact gradient is 0), so one device and eight
  # would differ by the rate there; the all-reduce under test is the same for either optimizer.
  config.optimizer.name = "sgd"
  host_batch = synthetic_batch(config)
  runs = {}
  for name, mesh_devices, dtype in (("one", devices[:1], "float32"), ("eight", devices, "float32"),
                                    ("bfloat16", devices[:1], "bfloat16")):
    config.compute_dtype = dtype
    mesh = train.make_mesh(mesh_devices)
    experiment = _experiment(config, mesh)
    batch = jax.device_put(host_batch, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec("data")))
    lowered = experiment.train_step.lower(experiment.initial_state, batch, True)
    convolutions = [line for line in lowered.as_text().splitlines() if "convolution" in line]
    assert convolutions and all(("bf16" in line) == (dtype == "bfloat16")
                                for line in convolutions)
    step = lowered.compile()  # The blur warm-up variant of the jitted step.
    # Two steps with the blur: BatchNorm statistics, the blur's random sizes and the momentum
    # all have to agree.
    state, first = step(experiment.initial_state, batch)
    state, second = step(state, batch)
    leaf = jax.tree.leaves(state.params)[0]
    assert len(leaf.sharding.device_set) == mesh.size and leaf.sharding.is_fully_replicated
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype("float32")}
    runs[name] = jax.device_get((state, first, second))

  (one, *metrics_one), (eight, *metrics_eight) = runs["one"], runs["eight"]
  assert int(one.step) == int(eight.step) == 2
  for a, b in zip(metrics_one, metrics_eight):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)
  for name, tree_one, tree_eight in (("params", one.params, eight.params),
                                     ("model_state", one.model_state, eight.model_state),
                                     ("opt_state", one.opt_state, eight.opt_state)):
    # The momentum of the saliency network holds its gradient through the warp, a sum of many
    # taps that cancel: with the demo's recipe it differs by 1.0e-4 of its norm (measured), the
    # parameters by 2e-7.
    assert_layouts_agree(tree_one, tree_eight, leaf_rtol=5e-3, norm_rtol=1e-3, name=name)
  # Same initialisation and batch in bfloat16: the first loss differs only by rounding.
  np.testing.assert_allclose(runs["bfloat16"][1]["loss"], metrics_one[0]["loss"], rtol=0.05)


def test_a_saliency_network_held_all_run_is_reported(tmp_path, capsys):
  """With the saliency hold out of reach (the loss at chance after one step), the run says that
  its model was uniform downsampling, and the saliency network's parameters never moved."""
  config = tiny(load_config("default"), steps=2)
  config.compare_with_uniform = False
  config.optimizer.saliency_delay_loss = 0.01
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["train"]["saliency_released"] == 0.0
  assert ("the saliency network was held all run: the training loss never fell below 0.01 of "
          "chance, so this model is uniform downsampling") in capsys.readouterr().out
  state = final_state(str(tmp_path / "run"), 2)
  initial = final_state(str(tmp_path / "run"), 1)
  moved = lambda name: [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(initial["params"][name]), jax.tree.leaves(state["params"][name]))]
  assert not any(moved("saliency_net")) and all(moved("task_net"))


def test_a_model_at_chance_is_reported(tmp_path, capsys):
  """Nothing trains (every rate multiplier 0) and the classifier starts at zero, so every logit
  stays 0 and the evaluation loss is log(6) exactly: the run says it is at chance, and its
  results.json too; every image is predicted class 0 (ties go to the lower class), which 3 of
  the 8 evaluation images are."""
  config = tiny(load_config("default"), steps=2)
  config.compare_with_uniform = False
  config.model.task_head_init = "zero"
  config.optimizer.lr_multipliers = {name: 0.0 for name in config.optimizer.lr_multipliers}
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["eval"]["loss"] == pytest.approx(np.log(6), rel=1e-6)
  assert results["eval"]["top1"] == 3 / 8 and results["at_chance"]
  assert "this model's evaluation loss (1.7918) is no better than chance's (log 6 = 1.7918)" \
      in capsys.readouterr().out
  with open(os.path.join(str(tmp_path / "run"), "results.json")) as f:
    assert json.load(f)["at_chance"] is True


def test_pretrained_weights_are_loaded_from_the_config_paths(tmp_path):
  from flax import nnx
  from saliency_jax import models
  from saliency_jax.models import convert
  config = tiny(load_config("default"))
  # "Pretrained" networks: another initialisation, written as converted .npz files.
  donor = models.build_model(config.model, num_outputs=6, rngs=nnx.Rngs(123))
  convert.save_converted(donor.task_net, tmp_path / "task.npz")
  convert.save_converted(donor.saliency_net.backbone, tmp_path / "saliency.npz")
  config.pretrained.task_net = str(tmp_path / "task.npz")
  config.pretrained.saliency_backbone = str(tmp_path / "saliency.npz")
  model = train.create_model(config, num_outputs=6)
  for got, want in ((model.task_net, donor.task_net),
                    (model.saliency_net.backbone, donor.saliency_net.backbone)):
    for a, b in zip(jax.tree.leaves(nnx.state(got, nnx.Param)),
                    jax.tree.leaves(nnx.state(want, nnx.Param))):
      np.testing.assert_array_equal(a, b)
  # The head is not part of the pretrained backbone: it keeps this run's initialisation.
  assert not np.array_equal(model.saliency_net.head.kernel[...], donor.saliency_net.head.kernel[...])

  config.pretrained.task_net = str(tmp_path / "missing.npz")
  with pytest.raises(train.ConfigError, match="pretrained.task_net: no file"):
    train.create_model(config, num_outputs=6)
  # A resumed run restores every parameter from its checkpoint: the files are not read again.
  resumed = train.create_model(config, num_outputs=6, load_pretrained=False)
  assert not np.array_equal(resumed.task_net.conv1.kernel[...], donor.task_net.conv1.kernel[...])


def test_the_release_is_announced_once_at_its_step():
  released = lambda steps: [(s, {"saliency_released": float(s >= 155)}) for s in steps]
  assert trainer._released_at(released(range(101, 151)), {}) is None  # Still held.
  assert trainer._released_at(released(range(151, 201)), {"saliency_released": 0.0}) == 155
  # The next interval: released throughout, already announced (0.92 of the one before).
  assert trainer._released_at(released(range(201, 251)), {"saliency_released": 0.92}) is None
  # A resumed run whose checkpoint's interval was released says nothing again; a run without
  # the hold has no such metric.
  assert trainer._released_at(released(range(251, 301)), {"saliency_released": 1.0}) is None
  assert trainer._released_at([(1, {"loss": 1.0})], {}) is None
