"""Bad input is rejected before the workdir is created or written, with a message naming the field.

Each case runs `train_and_evaluate` (or `train.py`) on a tiny config with one thing wrong and
checks the `ConfigError`'s field and that the workdir does not exist afterwards (or, given as an
empty folder, is still empty). The configs the issue found failing late are here: the task size
above the image size, a negative seed, `batch_size=None`, pretrained files a model cannot take
or that do not fit it, and an evaluation split whose every image is unreadable. The config that
validation accepts with a saliency backbone and `compare_with_uniform` is trained to the end.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from saliency_jax import models
from saliency_jax import train
from saliency_jax.models import convert
from saliency_jax.models import saliency_network
from tiny_experiments import load_config, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rejected(config, workdir, field: str) -> str:
  """Runs `config` in `workdir`, expecting a ConfigError naming `config.<field>`."""
  existed = os.path.isdir(workdir)
  with pytest.raises(train.ConfigError) as caught:
    train.train_and_evaluate(config, str(workdir))
  message = str(caught.value)
  assert message.startswith(f"config.{field}"), message
  if existed:
    assert os.listdir(workdir) == [], "the workdir was written"
  else:
    assert not os.path.exists(workdir), "the workdir was created"
  return message


def _uniform():
  config = tiny(load_config("uniform"))
  config.compare_with_uniform = False
  return config


def _saliency_backbone_file(path, *, depth: int) -> str:
  """A converted tiny saliency backbone (`.npz`) that fits `resnet_tiny` at `depth` layers."""
  net = saliency_network.SaliencyNetwork(backbone="resnet_tiny", depth=depth, grid_size=9,
                                         rngs=nnx.Rngs(1))
  convert.save_converted(net.backbone, path)
  return str(path)


def test_task_size_above_the_training_images(tmp_path):
  config = _uniform()
  config.model.task_size, config.data.image_size = 128, 64
  message = _rejected(config, tmp_path / "run", "model.task_size")
  assert "data.image_size (64)" in message and "got 128" in message


def test_task_size_above_the_evaluation_images(tmp_path):
  config = _uniform()
  config.data.eval_image_size, config.data.eval_resize = 24, 24
  message = _rejected(config, tmp_path / "run", "model.task_size")
  assert "data.eval_image_size (24)" in message


def test_negative_seed(tmp_path):
  config = _uniform()
  config.seed = -1
  _rejected(config, tmp_path / "run", "seed")


def test_batch_size_none(tmp_path):
  # ConfigDict lets None replace any field; the schema does not.
  config = _uniform()
  config.batch_size = None
  assert "expected int; got None" in _rejected(config, tmp_path / "run", "batch_size")


def test_a_subconfig_replaced_by_a_dict_of_other_fields(tmp_path):
  config = _uniform()
  with config.unlocked():
    config.data = {"name": "synthetic", "imagesize": 64}
  assert "unknown field 'imagesize'" in _rejected(config, tmp_path / "run", "data.imagesize")


def test_unknown_synthetic_split(tmp_path):
  config = _uniform()
  config.data.eval_split = "test"
  _rejected(config, tmp_path / "run", "data.eval_split")


@pytest.mark.parametrize("name,argument", [("cub200", "uniform"), ("inat2017", "uniform"),
                                           ("gaze", "uniform"), ("cam_crop", None),
                                           ("deformable", None)])
def test_saliency_backbone_for_a_model_without_a_saliency_network(tmp_path, name, argument):
  # The combination the experiment configs' docstrings used to suggest for their baselines.
  # (The gaze data are never read: validation fails first.)
  config = tiny(load_config(name, argument), gaze_dir=str(tmp_path))
  config.pretrained.saliency_backbone = _saliency_backbone_file(tmp_path / "b.npz", depth=6)
  workdir = tmp_path / "run"
  workdir.mkdir()
  message = _rejected(config, workdir, "pretrained.saliency_backbone")
  assert config.model.name in message and "Drop --config.pretrained.saliency_backbone" in message


def test_pretrained_task_net_for_inception(tmp_path):
  config = _uniform()
  config.model.task_net, config.model.task_size, config.data.image_size = "inception_v3", 75, 80
  config.data.eval_resize = 80
  path = tmp_path / "inception.pth"
  path.write_bytes(b"not read")
  config.pretrained.task_net = str(path)
  message = _rejected(config, tmp_path / "run", "pretrained.task_net")
  assert "'inception_v3'" in message


def test_pretrained_file_missing(tmp_path):
  config = _uniform()
  config.pretrained.task_net = str(tmp_path / "resnet.pth")
  assert "no file at" in _rejected(config, tmp_path / "run", "pretrained.task_net")


def test_pretrained_file_that_is_not_a_checkpoint(tmp_path):
  config = _uniform()
  path = tmp_path / "resnet.pth"
  path.write_bytes(b"\x00" * 64)
  config.pretrained.task_net = str(path)
  message = _rejected(config, tmp_path / "run", "pretrained.task_net")
  assert "cannot be loaded into model.task_net 'resnet_tiny'" in message
  assert "not a torch.save file" in message


def test_pretrained_backbone_that_does_not_fit(tmp_path):
  # A 6-layer backbone's weights for the 10-layer one of the demo's sampler: a stage is missing.
  config = tiny(load_config("default"))
  config.compare_with_uniform = False
  assert config.model.saliency_depth == 10
  config.pretrained.saliency_backbone = _saliency_backbone_file(tmp_path / "b.npz", depth=6)
  message = _rejected(config, tmp_path / "run", "pretrained.saliency_backbone")
  assert "cannot be loaded into model.saliency_backbone 'resnet_tiny'" in message


def _image_folder(root, unreadable: str):
  """An image folder of 2 classes x 4 images per split, every image of `unreadable` broken."""
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    for label in ("a", "b"):
      (root / split / label).mkdir(parents=True)
      for i in range(4):
        path = root / split / label / f"{i}.png"
        if split == unreadable:
          path.write_bytes(b"not a png")
        else:
          Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(path)
  config = _uniform()
  config.data.name, config.data.data_dir = "image_folder", str(root)
  return config


def test_evaluation_split_without_a_readable_image(tmp_path):
  config = _image_folder(tmp_path / "images", unreadable="val")
  message = _rejected(config, tmp_path / "run", "data")
  assert "no image of the image_folder" in message and "can be read" in message


def test_training_split_without_a_readable_image(tmp_path):
  config = _image_folder(tmp_path / "images", unreadable="train")
  message = _rejected(config, tmp_path / "run", "data")
  assert "the train split of 'image_folder' cannot be read" in message
  assert "consecutive records from index 0 cannot be decoded" in message


def test_compare_with_uniform_and_a_saliency_backbone_train_both(tmp_path):
  # Accepted: the sampler loads the backbone, the uniform baseline (no saliency network) runs
  # without it, both to the end.
  config = tiny(load_config("default"))
  assert config.compare_with_uniform
  path = _saliency_backbone_file(tmp_path / "b.npz", depth=config.model.saliency_depth)
  config.pretrained.saliency_backbone = path
  train.config.validate_config(config)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["model"] == "saliency_sampler" and results["uniform"]["model"] == "uniform"
  assert np.isfinite(results["uniform"]["eval"]["loss"])


def test_the_models_the_table_lets_take_a_saliency_backbone_have_a_saliency_network():
  # The table accepts a pretrained saliency backbone exactly where `load_pretrained` has a
  # network to put it in.
  config = tiny(load_config("default"))
  config.compare_with_uniform = False
  # The sampler's alone: the others reject them.
  for field in models.model_config.SAMPLER_ONLY:
    config.model[field] = models.model_config.DEFAULTS[field]
  for name in models.MODEL_NAMES:
    model = models.build_model({**config.model.to_dict(), "name": name}, num_outputs=3,
                               rngs=nnx.Rngs(0))
    has_saliency_net = any(hasattr(model, a) for a in models.pretrained.LOCALISATION_ATTRIBUTES)
    assert has_saliency_net == (name in models.model_config.MODELS_WITH_SALIENCY_NET), name


def test_train_py_reports_a_bad_value_in_one_line_without_a_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={tmp_path / 'run'}",
       "--config.seed=-1"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines == ["train.py: config.seed: expected an int in [0, 2^63); got -1."], lines
  assert not os.path.exists(tmp_path / "run")
