"""Every experiment config loads and validates; bad configs fail early with a message naming
the field."""
import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest

import saliency_jax as sj
from saliency_jax import schema
from saliency_jax.train import trainer
from saliency_jax.train import ConfigError, base_config, validate_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (config module, get_config argument or None).
CONFIGS = [
    ("default", None), ("uniform", None), ("stn_affine", None), ("stn_tps", None),
    ("grid_estimator", None), ("cam_crop", None), ("deformable", None),
    ("cub200", None), ("cub200", "uniform"),
    ("inat2017", None), ("inat2017", "stn_tps"), ("inat2017", "cam_crop"),
    ("inat2017_depth", "6"), ("inat2017_depth", "10"), ("inat2017_depth", "14"),
    ("gaze", None), ("gaze", "uniform"), ("zoom_suite", None), ("image_folder", None),
    ("dense_scenes", None), ("dense_scenes_prior", None), ("dense_scenes_detection", None),
    ("dense_scenes_small", None),
    ("cityscapes", None), ("voc2012", None),
]


def load(name, argument=None):
  module = importlib.import_module(f"configs.{name}")
  return module.get_config() if argument is None else module.get_config(argument)


def test_every_config_file_is_listed():
  files = {f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
           if f.endswith(".py") and f != "__init__.py"}
  assert files == {name for name, _ in CONFIGS}


@pytest.mark.parametrize("name,argument", CONFIGS)
def test_config_validates_and_documents_its_command(name, argument):
  config = load(name, argument)
  validate_config(config, num_devices=1)
  doc = importlib.import_module(f"configs.{name}").__doc__
  assert "python train.py" in doc and f"configs/{name}.py" in doc or name == "default"
  # And what it reaches: the paper's figure, or what was measured here.
  assert "paper" in doc.lower() or "measured" in doc.lower(), name
  assert config.is_locked  # Typos in overrides fail instead of adding fields.


def test_paper_settings_of_the_experiments():
  cub, inat, gaze = load("cub200"), load("inat2017"), load("gaze")
  assert (cub.model.task_net, cub.model.task_size, cub.model.saliency_depth) == (
      "resnet50", 227, 14)
  assert (inat.model.task_net, inat.model.task_size, inat.data.image_size) == (
      "resnet101", 227, 800)
  assert [load("inat2017_depth", d).model.saliency_depth for d in "6 10 14".split()] == [
      6, 10, 14]
  assert (gaze.model.task_net, gaze.model.saliency_depth, gaze.data.name) == (
      "alexnet", 10, "gazecapture")
  assert dict(inat.optimizer.lr_multipliers) == {
      "task": 1.0, "saliency_head": 0.01, "saliency_backbone": 0.001}
  demo = load("default")
  assert demo.compare_with_uniform and demo.data.name == "synthetic"
  # The demo and its uniform config train from scratch with AdamW, every group at one rate.
  for config in (demo, load("uniform")):
    assert (config.optimizer.name, config.optimizer.learning_rate) == ("adamw", 0.002)
    assert set(dict(config.optimizer.lr_multipliers).values()) == {1.0}
  # configs/uniform.py is the demo's comparison run: they differ only in the sampler's recipe
  # fields, which the uniform model does not read (per-group clipping is the global clip for
  # its one parameter group).
  baseline = schema.flatten(trainer.uniform_baseline(demo))
  uniform = schema.flatten(load("uniform"))
  differing = {name for name in baseline if baseline[name] != uniform[name]}
  assert differing == {"model.antialias", "model.exact_identity", "model.align_corners",
                       "optimizer.clip_per_group"}


def test_unknown_field_is_rejected():
  config = base_config()
  with pytest.raises(AttributeError):
    config.batchsize = 8  # Locked: a typo cannot add a field.
  with config.unlocked():
    config.batchsize = 8
  with pytest.raises(ConfigError, match="unknown field.*batchsize"):
    validate_config(config)


@pytest.mark.parametrize("field,value,message", [
    ("compute_dtype", "float16", "compute_dtype: expected one of"),
    ("optimizer.schedule", "linear", "optimizer.schedule"),
    ("optimizer.momentum", 1.5, "optimizer.momentum"),
    ("optimizer.saliency_delay", 1.0, "optimizer.saliency_delay"),
    ("optimizer.saliency_delay_loss", 1.0,
     r"config.optimizer.saliency_delay_loss: expected in \[0, 1\), a fraction of the loss at "
     r"chance; got 1.0"),
    ("batch_size", 0, "batch_size"),
    ("keep_checkpoints", 0, "keep_checkpoints"),
    ("model.task_net", "vgg16", "config.model.*task_net"),
    ("data.name", "imagenet", "config.data.*name"),
    ("optimizer.lr_multipliers", {"task": 1.0}, "lr_multipliers"),
    # What ConfigDict's own types let through.
    ("batch_size", None, r"config.batch_size: expected int; got None"),
    ("model.grid_size", True, r"config.model.grid_size: expected int; got True"),
    ("optimizer.lr_multipliers", {"task": 1.0, "saliency_head": True, "saliency_backbone": 0.1},
     "lr_multipliers: expected non-negative numbers"),
    # Ranges and relations between fields.
    ("seed", -1, r"config.seed: expected an int in \[0, 2\^63\); got -1"),
    ("model.task_size", 600, r"config.model.task_size: expected at most data.image_size \(512\)"),
    ("process_id", 3, r"config.process_id: expected -1 \(detected\) or in \[0, num_processes"),
    ("model.magnification_input", True,
     r"config.model.magnification_input: expected False, or True only for zoom_unzoom"),
    ("model.warped_box_sizes", True,
     r"config.model.warped_box_sizes: expected False, or True only for zoom_unzoom with "
     r"dense_head 'detection'"),
])
def test_bad_values_name_the_field(field, value, message):
  config = base_config()
  parent = config
  *path, last = field.split(".")
  for part in path:
    parent = parent[part]
  with config.unlocked():
    parent[last] = value
  with pytest.raises(ConfigError, match=message):
    validate_config(config)


def test_the_saliency_hold_is_refused_for_tasks_without_a_loss_at_chance():
  config = base_config()
  config.optimizer.saliency_delay_loss = 0.9
  validate_config(config)  # Classification.
  config.data.name = "gazecapture"
  with pytest.raises(ConfigError, match=r"config.optimizer.saliency_delay_loss: expected 0 for "
                                        r"data.name 'gazecapture', whose task is regression"):
    validate_config(config)


def test_an_axis_aligned_grid_is_refused_for_models_without_an_attraction_grid():
  config = base_config()
  config.model.axis_aligned = True
  validate_config(config)  # The sampler has one.
  config.model.name = "stn_affine"
  with pytest.raises(ConfigError, match=r"config.model.axis_aligned: expected False for "
                                        r"stn_affine: only the attraction grid"):
    validate_config(config)


def test_the_samplers_numerics_default_to_the_ops_defaults():
  # One home for each default: the ops' signatures hold the authors' values.
  model = base_config().model
  grid = inspect.signature(sj.attraction_grid).parameters
  sample = inspect.signature(sj.saliency_sample).parameters
  assert (model.fwhm, model.padding) == (grid["fwhm"].default, grid["padding"].default) == (
      13.0, 30)
  assert (model.temperature, model.align_corners) == (
      sample["temperature"].default, sample["align_corners"].default) == (1.0, True)
  from saliency_jax import models
  layer = inspect.signature(models.SaliencySampler.__init__).parameters
  assert {name: layer[name].default for name in ("fwhm", "padding", "temperature",
                                                 "align_corners")} == {
      "fwhm": 13.0, "padding": 30, "temperature": 1.0, "align_corners": True}


def test_the_layers_reject_the_same_bad_fields_on_their_own():
  # The model and data layers run their rows of the one table on the configs given to them.
  from saliency_jax import data, models
  with pytest.raises(ValueError, match=r"model_config.grid_size: expected an int >= 2; got 1"):
    models.model_config.parse_model_config({"grid_size": 1})
  with pytest.raises(ValueError, match=r"data.prefetch: expected >= 1; got 0"):
    data.parse_data_config({"prefetch": 0})
  with pytest.raises(ConfigError, match=r"config.model.grid_size: expected an int >= 2; got 1"):
    config = base_config()
    config.model.grid_size = 1
    validate_config(config)


@pytest.mark.parametrize("name,argument", [("cub200", None), ("inat2017", None), ("gaze", None),
                                           ("inat2017_depth", "6")])
def test_the_command_of_each_docstring_is_accepted(name, argument):
  config = load(name, argument)
  doc = importlib.import_module(f"configs.{name}").__doc__
  overrides = re.findall(r"--config\.([\w.]+)=(\S+)", doc)
  assert any(field == "pretrained.saliency_backbone" for field, _ in overrides), name
  for field, value in overrides:
    *path, last = field.split(".")
    parent = config
    for part in path:
      parent = parent[part]
    parent[last] = value
  validate_config(config)
  # Its baselines without a saliency network, with the backbone dropped as the docstring says.
  config.model.name = "uniform"
  with pytest.raises(ConfigError, match="config.pretrained.saliency_backbone"):
    validate_config(config)
  config.pretrained.saliency_backbone = ""
  validate_config(config)


def test_global_batch_must_split_over_devices():
  config = base_config()
  config.batch_size = 12
  validate_config(config, num_devices=4)
  with pytest.raises(ConfigError, match=r"batch_size.*\(12\).*devices \(8\).*batch_size=8"):
    validate_config(config, num_devices=8)


def test_command_line_typo_gets_a_clear_message(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={tmp_path}",
       "--config.optimizer.learning_rat=0.1"], capture_output=True, text=True, cwd=ROOT,
      timeout=120)
  assert result.returncode != 0
  assert "unknown config field" in result.stderr and "learning_rat" in result.stderr
  assert "Traceback" not in result.stderr
  assert os.listdir(tmp_path) == []  # Nothing was written.


def test_command_line_typo_with_an_explicit_config_gets_a_clear_message(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={tmp_path}",
       "--config=configs/cub200.py", "--config.optimizer.learning_rat=0.1"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode != 0
  assert "unknown config field" in result.stderr and "learning_rat" in result.stderr
  assert "Traceback" not in result.stderr
  assert os.listdir(tmp_path) == []


def test_the_uniform_baseline_of_a_sampler_with_every_option_is_valid():
  """`compare_with_uniform` of a sampler that sets each sampler-only field: the baseline
  validates, is uniform, and differs from the sampler's run in those fields only."""
  from saliency_jax.train import trainer
  config = load("default")
  # Each needs a single glimpse: checked on their own below.
  config.model.uniform_view = "off"
  config.model.saliency_supervision = 0.0
  config.model.warp_gradient = True
  config.model.axis_aligned = True
  config.model.detail_prior = True
  config.model.cap_at_source = True
  config.model.explore = 2.0
  config.model.glimpses = 3
  config.model.saliency_cost = 0.1
  config.model.dead_zone = 1.0
  config.optimizer.saliency_delay_loss = 0.9
  validate_config(config)
  uniform = trainer.uniform_baseline(config)
  model = sj.models.default_model_config()
  assert uniform.model.name == "uniform" and not uniform.compare_with_uniform
  changed = {"name", "axis_aligned", "cap_at_source", "detail_prior", "explore", "glimpses",
             "saliency_cost", "dead_zone"}
  for field, value in uniform.model.items():
    expected = "uniform" if field == "name" else (
        model[field] if field in changed else config.model[field])
    assert value == expected, field
  # The same optimizer but for the saliency hold, which has nothing to hold there.
  assert uniform.optimizer.saliency_delay_loss == 0
  assert ({**uniform.optimizer.to_dict(), "saliency_delay_loss": 0.9}
          == config.optimizer.to_dict())
  assert uniform.data.to_dict() == config.data.to_dict()
  config.model.glimpses = 1
  config.model.uniform_view = "each"
  config.model.saliency_supervision = 1.0
  config.model.warp_gradient = False
  validate_config(config)
  uniform = trainer.uniform_baseline(config).model
  assert (uniform.uniform_view, uniform.saliency_supervision, uniform.warp_gradient) == (
      "off", 0.0, True)
