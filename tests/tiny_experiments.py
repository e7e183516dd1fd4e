"""Tiny variants of the experiment configs and fake data, shared by the trainer's tests."""
import importlib
import json
import os

import ml_collections
import numpy as np
from PIL import Image


def load_config(name: str, argument: str | None = None) -> ml_collections.ConfigDict:
  module = importlib.import_module(f"configs.{name}")
  return module.get_config() if argument is None else module.get_config(argument)


# The demo's recipe with tiny networks and data: the body of every config file that the trainer's
# subprocess tests (kills, signals, resume, several processes) write for train.py.
_CONFIG_FILE_BODY = """\
from configs import default


def get_config():
  c = default.common_config()  # The paper's layer: these tests check the trainer, not the recipe.
  m = c.model
  m.task_net = m.saliency_backbone = "resnet_tiny"
  m.task_size = m.low_res_size = 32
  m.grid_size, m.padding, m.fwhm = 9, 4, 4.0
  s = c.data.synthetic
  s.object_size, s.frame_width, s.detail_period = 8, 2, 2
  s.num_distractors, s.num_clutter = 1, 1
  c.data.image_size, c.data.num_workers, c.data.prefetch = 64, 0, 1
  c.batch_size = 8
  c.num_panels = 1
"""


def train_config_source(fields: dict) -> str:
  """Source of a config file for train.py: the tiny demo, then `fields` (dotted names under the
  config, e.g. "data.synthetic.train_size", -> values) set in order."""
  lines = [f"  c.{name} = {value!r}\n" for name, value in fields.items()]
  return _CONFIG_FILE_BODY + "".join(lines) + "  return c\n"


def write_gazecapture(root: str, *, train_frames: int = 8, test_frames: int = 4) -> str:
  """A GazeCapture directory in the official layout with one train and one test recording."""
  rng = np.random.default_rng(0)
  for number, split, n in ((1, "train", train_frames), (2, "test", test_frames)):
    folder = os.path.join(root, f"{number:05d}")
    os.makedirs(os.path.join(folder, "frames"))
    for i in range(n):
      frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
      Image.fromarray(frame).save(os.path.join(folder, "frames", f"{i:05d}.jpg"))
    box = {"X": [8.0] * n, "Y": [4.0] * n, "W": [32.0] * n, "H": [32.0] * n, "IsValid": [1] * n}
    metadata = {
        "appleFace": box, "appleLeftEye": box, "appleRightEye": box,
        "faceGrid": {"X": [1] * n, "Y": [1] * n, "W": [5] * n, "H": [5] * n, "IsValid": [1] * n},
        "dotInfo": {"DotNum": list(range(n)), "XPts": [0] * n, "YPts": [0] * n,
                    "XCam": rng.uniform(-5, 5, n).tolist(), "YCam": rng.uniform(-9, 0, n).tolist(),
                    "Time": [0.0] * n},
        "frames": [f"{i:05d}.jpg" for i in range(n)],
        "info": {"TotalFrames": n, "NumFaceDetections": n, "NumEyeDetections": n,
                 "Dataset": split, "DeviceName": "iPhone 6"},
    }
    for name, value in metadata.items():
      with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump(value, f)
  return root


def tiny(config: ml_collections.ConfigDict, *, gaze_dir: str | None = None,
         steps: int = 1, batch_size: int = 8) -> ml_collections.ConfigDict:
  """The same experiment with tiny networks, tiny images and a few steps.

  The optimizer, schedule, model kind, task and trainer logic stay those of `config`; CUB and
  iNaturalist are replaced by the synthetic classification task, GazeCapture by `gaze_dir`; the
  dense scenes stay, with fewer objects.
  """
  c = config.copy_and_resolve_references()
  m = c.model
  m.task_net, m.saliency_backbone = "resnet_tiny", "resnet_tiny"
  m.task_size, m.low_res_size = 32, 32
  m.grid_size, m.padding, m.fwhm = 9, 4, 4.0
  # Plain sampling: the trainer's tests check the trainer, and the ops and model tests cover
  # anti-aliasing (the demo's). Its multi-process gradients differed from one process's beyond
  # the multi-process test's tolerance (2.9e-8 absolute in a 9.4e-6 bias), still to look into.
  m.antialias = False
  image_size = 64
  if c.data.name == "gazecapture":
    assert gaze_dir is not None
    c.data.data_dir = gaze_dir
  elif c.data.name == "dense_scenes":
    d = c.data.dense
    d.train_size, d.eval_size, d.max_large, d.max_small, d.num_clutter = 16, 8, 1, 2, 1
    d.min_objects = 0  # Some scenes are empty: those must train and evaluate too.
    image_size = 272  # The smallest DenseScenes places a large object in (and a multiple of 8).
    m.head_width = 8
  else:
    c.data.name = "synthetic"
    s = c.data.synthetic
    s.train_size, s.eval_size = 32, 8
    s.object_size, s.frame_width, s.detail_period = 8, 2, 2
    s.num_distractors, s.num_clutter = 1, 1
  c.data.image_size, c.data.eval_image_size, c.data.eval_resize = image_size, 0, image_size
  c.data.num_workers, c.data.prefetch = 0, 1
  c.batch_size = batch_size
  c.num_train_steps = steps
  c.log_every_steps = 1
  c.checkpoint_every_steps = 1
  c.eval_every_steps = 0
  c.num_panels = 2
  c.progress_bar = False
  c.pretrained.task_net = c.pretrained.saliency_backbone = ""
  return c


def synthetic_batch(config, size=8):
  """`size` examples of the synthetic task at the config's image size, as one host batch."""
  from saliency_jax import data
  source = data.SyntheticZoom(size=size, image_size=config.data.image_size, object_size=8,
                              frame_width=2, detail_period=2, num_distractors=1, num_clutter=1)
  examples = [source[i] for i in range(size)]
  return {"image": np.stack([e["image"] for e in examples]),
          "label": np.array([e["label"] for e in examples], np.int32),
          "mask": np.ones(size, bool)}
