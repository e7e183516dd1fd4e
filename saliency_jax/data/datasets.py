"""Which datasets exist: their task, output count, splits, sources and preprocessing.

A *source* is a random-access sequence (`len`, `[index]`) of records
`{"image": <encoded bytes | file path | array | PIL image>, "label": <int | float32 [2]>}`
(dense sources: `"mask"`, `"boxes"`, `"labels"` and `"small"` instead of `"label"`; see
`saliency_jax.data.dense_records`), picklable so that grain can hand it to worker processes. The
loader decodes and preprocesses the records; how is decided here by `preprocessing`:
- "crop": natural photographs; training takes a random-resized crop and a flip, evaluation
  resizes the shorter side to `eval_resize` and takes the centre crop.
- "resize": inputs that are framed already (synthetic and zoom-suite images, GazeCapture faces
  and frames):
  both splits resize the whole image to the square high-resolution size, nothing is cropped or
  flipped (a flip would also mirror the gaze target or the synthetic textures' class).
- "dense": the real dense datasets (Cityscapes, VOC 2012): both splits resize the whole
  photograph to the square `image_size` (the aspect ratio is not kept), the mask by nearest
  neighbour and the boxes scaled; training flips image, mask and boxes together if `hflip`
  (`transforms.dense_transform`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from saliency_jax.data import config as config_lib

DEFAULT_EVAL_SPLITS = {
    "synthetic": "eval",
    "cub": "test",
    "inaturalist2017": "validation",
    "image_folder": "val",
    "gazecapture": "test",
    **{name: "eval" for name in config_lib.ZOOM_TASKS},
    "dense_scenes": "eval",
    **{name: "validation" for name in config_lib.DENSE_REAL},
}
TRAIN_SPLITS = {"cub": "train", "inaturalist2017": "train", "image_folder": "train",
                "gazecapture": "train", **{name: "train" for name in config_lib.PROCEDURAL},
                **{name: "train" for name in config_lib.DENSE_REAL}}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainer needs to know about a dataset before building a model.

  Attributes:
    task: "classification" (integer labels), "regression" (float32 `[2]` targets) or "dense"
      (per-pixel masks and boxes).
    num_outputs: number of classes (object classes for dense tasks), or 2 for the gaze point.
    train_size: examples in the training split.
    eval_size: examples in the evaluation split.
  """

  task: str
  num_outputs: int
  train_size: int
  eval_size: int


def preprocessing(cfg: dict[str, Any]) -> str:
  """"crop", "resize" or "dense" (see the module docstring)."""
  if cfg["name"] in config_lib.DENSE_REAL:
    return "dense"
  return "resize" if cfg["name"] in ("gazecapture", *config_lib.PROCEDURAL) else "crop"


def split_name(cfg: dict[str, Any], split: str) -> str:
  """The dataset's own name of the loader split "train" or "eval"."""
  if split == "train":
    return TRAIN_SPLITS[cfg["name"]]
  return cfg["eval_split"] or DEFAULT_EVAL_SPLITS[cfg["name"]]


def make_source(cfg: dict[str, Any], split: str):
  """The source of the loader split "train" or "eval" of a parsed data config.

  Raises:
    FileNotFoundError: if the data is missing or unprepared; the message says what to do.
  """
  name = cfg["name"]
  dataset_split = split_name(cfg, split)
  if name == "synthetic":
    # pylint: disable-next=g-import-not-at-top
    from saliency_jax.data.synthetic import SyntheticZoom
    syn = cfg["synthetic"]
    if dataset_split not in ("train", "eval"):
      raise ValueError(f"data.eval_split: the synthetic task has splits 'train' and 'eval'; got "
                       f"{dataset_split!r}.")
    return SyntheticZoom(
        size=syn["train_size"] if dataset_split == "train" else syn["eval_size"],
        split=dataset_split, image_size=syn["image_size"], num_classes=syn["num_classes"],
        object_size=syn["object_size"], frame_width=syn["frame_width"],
        detail_period=syn["detail_period"], num_distractors=syn["num_distractors"],
        num_clutter=syn["num_clutter"], seed=syn["seed"])
  if name in config_lib.ZOOM_TASKS:
    from saliency_jax.data import zoom_tasks  # pylint: disable=g-import-not-at-top
    zoom = cfg["zoom"]
    if dataset_split not in ("train", "eval"):
      raise ValueError(f"data.eval_split: the zoom tasks have splits 'train' and 'eval'; got "
                       f"{dataset_split!r}.")
    return zoom_tasks.ZoomTask(
        family=name, size=zoom["train_size"] if dataset_split == "train" else zoom["eval_size"],
        split=dataset_split, image_size=zoom["image_size"], cell_size=zoom["cell_size"],
        frame_width=zoom["frame_width"], repeats=zoom["repeats"],
        num_distractors=zoom["num_distractors"],
        num_clutter=zoom["num_clutter"], seed=zoom["seed"])
  if name == "dense_scenes":
    from saliency_jax.data import dense_scenes  # pylint: disable=g-import-not-at-top
    dense = cfg["dense"]
    if dataset_split not in ("train", "eval"):
      raise ValueError(f"data.eval_split: the dense scenes have splits 'train' and 'eval'; got "
                       f"{dataset_split!r}.")
    return dense_scenes.DenseScenes(
        size=dense["train_size"] if dataset_split == "train" else dense["eval_size"],
        split=dataset_split, image_size=cfg["image_size"], num_classes=dense["num_classes"],
        max_small=dense["max_small"], max_large=dense["max_large"],
        min_objects=dense["min_objects"], num_clutter=dense["num_clutter"], seed=dense["seed"])
  if name == "cityscapes":
    from saliency_jax.data import cityscapes  # pylint: disable=g-import-not-at-top
    return cityscapes.cityscapes_source(dataset_split, data_dir=cfg["data_dir"],
                                        max_boxes=cfg["max_boxes"] or cityscapes.MAX_BOXES)
  if name == "voc2012":
    from saliency_jax.data import voc  # pylint: disable=g-import-not-at-top
    return voc.voc_source(dataset_split, data_dir=cfg["data_dir"],
                          max_boxes=cfg["max_boxes"] or voc.MAX_BOXES)
  if name == "cub":
    from saliency_jax.data import cub  # pylint: disable=g-import-not-at-top
    return cub.cub_source(dataset_split, data_dir=cfg["data_dir"])
  if name == "inaturalist2017":
    from saliency_jax.data import inaturalist  # pylint: disable=g-import-not-at-top
    return inaturalist.inaturalist_source(dataset_split, data_dir=cfg["data_dir"])
  if name == "image_folder":
    from saliency_jax.data import image_folder  # pylint: disable=g-import-not-at-top
    if not cfg["data_dir"]:
      raise ValueError("data.data_dir: the image_folder dataset needs the folder that holds "
                       "train/ and val/; got ''.")
    return image_folder.ImageFolderSource.from_folder(cfg["data_dir"], dataset_split)
  if name == "gazecapture":
    from saliency_jax.data import gazecapture  # pylint: disable=g-import-not-at-top
    if not cfg["data_dir"]:
      raise ValueError("data.data_dir: the gazecapture dataset needs the folder of the "
                       "extracted recordings; got ''.")
    return gazecapture.GazeCaptureSource.from_folder(cfg["data_dir"], dataset_split,
                                                     view=cfg["gaze_input"])
  raise ValueError(f"data.name: expected one of {config_lib.DATASETS}; got {name!r}.")


def _num_outputs(cfg: dict[str, Any], train_source) -> int:
  name = cfg["name"]
  if name == "synthetic":
    return cfg["synthetic"]["num_classes"]
  if name == "cub":
    from saliency_jax.data import cub  # pylint: disable=g-import-not-at-top
    return cub.NUM_CLASSES
  if name == "inaturalist2017":
    from saliency_jax.data import inaturalist  # pylint: disable=g-import-not-at-top
    return inaturalist.NUM_CLASSES
  if name == "image_folder":
    return len(train_source.class_names)
  if name in (*config_lib.ZOOM_TASKS, *config_lib.DENSE_DATASETS):
    return train_source.num_classes
  return 2


def dataset_info(data_config: Any) -> DatasetInfo:
  """Task, output count and split sizes of the configured dataset.

  Args:
    data_config: a data config (`ConfigDict` or dict; see `default_data_config`).

  Raises:
    ValueError: for a bad config; FileNotFoundError: for missing or unprepared data.
  """
  cfg = config_lib.parse_data_config(data_config)
  train = make_source(cfg, "train")
  evaluation = make_source(cfg, "eval")
  return DatasetInfo(task=config_lib.DATASET_TASKS[cfg["name"]],
                     num_outputs=_num_outputs(cfg, train), train_size=len(train),
                     eval_size=len(evaluation))


def training_boxes(data_config: Any, *, limit: int) -> tuple[np.ndarray, np.ndarray]:
  """The object boxes of the first `limit` training records of a dense dataset.

  What a fixed saliency prior is estimated from (the KDE of FOVEA and LZU). A source with an
  `objects(index)` method (`DenseScenes`) gives them without decoding its images. Boxes of raw
  records (the real datasets') are scaled from their own image's width and height to the square
  delivered image, which is where the resize puts them.

  Returns:
    `(boxes [N, M, 4], valid [N, M])`: `(x0, y0, x1, y1)` float32 on the pixel edges of the
    delivered `image_size` image (`ops.normalize_boxes` takes them to a grid's coordinates), and
    False on padding rows.

  Raises:
    ValueError: if the dataset is not a dense one.
  """
  cfg = config_lib.parse_data_config(data_config)
  if config_lib.DATASET_TASKS[cfg["name"]] != "dense":
    raise ValueError(f"data.name: a box prior needs a dense dataset "
                     f"{config_lib.DENSE_DATASETS}; got {cfg['name']!r}.")
  source = make_source(cfg, "train")
  read = getattr(source, "objects", source.__getitem__)
  records = [read(i) for i in range(min(limit, len(source)))]
  size = cfg["image_size"]
  boxes = np.stack([np.asarray(r["boxes"], np.float32) * size
                    / np.array([r.get("width", size), r.get("height", size)] * 2, np.float32)
                    for r in records])
  valid = np.stack([np.asarray(r["labels"]) >= 0 for r in records])
  return boxes, valid
