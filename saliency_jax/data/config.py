"""The data configuration: every field with its default (the schema), and its checks.

`default_data_config()` is the schema (a locked `ConfigDict`: the defaults give each field its
type) and `CHECKS` the table of ranges, both used through `saliency_jax.schema`. A config given to
`make_loader` or `dataset_info` may be a `ConfigDict` or a plain dict, complete or partial
(missing fields take their defaults); a field that is not in the schema, a value of the wrong
type or out of range raises a `ValueError` that names the field, before any data is read.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from saliency_jax import schema

# The zoom-task suite's families (`saliency_jax.data.zoom_tasks`), named here so that validating
# a config imports no renderer.
ZOOM_TASKS = ("zoom_glyph", "zoom_orientation", "zoom_count", "zoom_marker")
# The real dense datasets (`cityscapes`, `voc`; prepared by this project's tfds builders):
# photographs of any size, resized whole to image_size with their masks and boxes.
DENSE_REAL = ("cityscapes", "voc2012")
# The dense datasets: masks and boxes, no label; `dense_scenes` is procedural.
DENSE_DATASETS = ("dense_scenes", *DENSE_REAL)
DATASETS = ("synthetic", "cub", "inaturalist2017", "image_folder", "gazecapture", *ZOOM_TASKS,
            *DENSE_DATASETS)
# Each dataset's task; "dense" is segmentation or detection, as the model's dense head says.
DATASET_TASKS = {
    **{name: "classification" for name in DATASETS},
    "gazecapture": "regression",
    **{name: "dense" for name in DENSE_DATASETS},
}
# The datasets whose images are framed already: resized whole, never cropped or flipped.
PROCEDURAL = ("synthetic", *ZOOM_TASKS, "dense_scenes")


def default_data_config() -> ml_collections.ConfigDict:
  """All data fields with their defaults (the synthetic demo task).

  Fields:
    name: one of `DATASETS`.
    image_size: side of the square high-resolution images delivered in training (the authors'
      800 for natural images; 512 for the synthetic task).
    eval_image_size: side of the evaluation images (the authors' 700 centre crop); 0 means
      `image_size`.
    eval_resize: shorter side an evaluation image is resized to before the centre crop to
      `eval_image_size` (the authors: 800 with a 700 crop); 0 means `eval_image_size` (no margin).
    eval_split: split used for evaluation; "" picks the dataset's usual one ("test" for CUB
      and GazeCapture, "validation" for iNaturalist, "val" for image folders).
    data_dir: tfds data directory (cub, inaturalist2017, cityscapes, voc2012; "" = tfds's
      default), the root of the image folder (image_folder), or of the extracted GazeCapture
      dataset (gazecapture).
    manual_dir: where the iNaturalist 2017, Cityscapes or VOC 2012 files were downloaded (used
      when preparing); "" = `<data_dir>/downloads/manual`.
    num_workers: input worker processes per host; 0 prepares batches in threads of this process.
    prefetch: batches prepared ahead per worker (or threads, with num_workers = 0).
    min_crop_area: smallest area fraction of the training random-resized crop (torchvision 0.08).
    hflip: random horizontal flips in training (natural-image datasets only; the real dense
      datasets flip their masks and boxes with the image).
    max_boxes: rows of boxes per record of the real dense datasets (cityscapes, voc2012); 0 =
      the dataset's default (128, 64); an image with more objects keeps its largest.
    gaze_input: GazeCapture input, "face" (the face crop) or "frame" (the whole camera frame).
    synthetic: the knobs of `saliency_jax.data.synthetic.SyntheticZoom`; `image_size` 0 means
      `image_size` above; train and eval images come from independent streams of `seed`.
    zoom: the knobs of the zoom-task suite (`saliency_jax.data.zoom_tasks.ZoomTask`, the
      families `ZOOM_TASKS`); `image_size` 0 means `image_size` above.
    dense: the knobs of `saliency_jax.data.dense_scenes.DenseScenes` (`dense_scenes`), rendered
      at `image_size`. Every dense dataset delivers both splits at `image_size`, which must then
      be the evaluation size too (the real ones resize the whole photograph to it).
  """
  config = ml_collections.ConfigDict({
      "name": "synthetic",
      "image_size": 512,
      "eval_image_size": 0,
      "eval_resize": 0,
      "eval_split": "",
      "data_dir": "",
      "manual_dir": "",
      "num_workers": 0,
      "prefetch": 2,
      "min_crop_area": 0.08,
      "hflip": True,
      "max_boxes": 0,
      "gaze_input": "face",
      "synthetic": {
          "num_classes": 6,
          "train_size": 50_000,
          "eval_size": 1_000,
          "image_size": 0,
          "object_size": 40,
          "frame_width": 8,
          "detail_period": 8,
          "num_distractors": 4,
          "num_clutter": 6,
          "seed": 0,
      },
      "zoom": {
          "train_size": 20_000,
          "eval_size": 1_000,
          "image_size": 0,
          "cell_size": 3,
          "frame_width": 8,
          "repeats": 1,
          "num_distractors": 3,
          "num_clutter": 6,
          "seed": 0,
      },
      "dense": {
          "num_classes": 4,
          "train_size": 4_000,
          "eval_size": 500,
          "max_small": 6,
          "max_large": 2,
          "min_objects": 1,
          "num_clutter": 6,
          "seed": 0,
      },
  })
  config.lock()
  return config


def _eval_image_size(c) -> int:
  return c.eval_image_size or c.image_size


def _eval_resize(c) -> int:
  return c.eval_resize or _eval_image_size(c)


CHECKS = (
    schema.Check("name", lambda c: c.name in DATASETS, f"one of {DATASETS}"),
    schema.Check("image_size", lambda c: c.image_size >= 1, "a positive size in pixels"),
    schema.Check("eval_image_size", lambda c: c.eval_image_size >= 0,
                 "0 (= image_size) or a size in pixels"),
    schema.Check("eval_resize",
                 lambda c: c.eval_resize == 0 or c.eval_resize >= _eval_image_size(c),
                 lambda c: f"0 or >= eval_image_size ({_eval_image_size(c)}), the centre crop is "
                           f"taken from it"),
    schema.Check("num_workers", lambda c: c.num_workers >= 0, ">= 0"),
    schema.Check("prefetch", lambda c: c.prefetch >= 1, ">= 1"),
    schema.Check("min_crop_area", lambda c: 0 < c.min_crop_area <= 1, "in (0, 1]"),
    schema.Check("max_boxes", lambda c: c.max_boxes >= 0, "0 (the dataset's default) or >= 1"),
    schema.Check("gaze_input", lambda c: c.gaze_input in ("face", "frame"), "'face' or 'frame'"),
    schema.Check("eval_split",
                 lambda c: c.name not in PROCEDURAL or c.eval_split in ("", "eval", "train"),
                 "'', 'eval' or 'train' for the procedural tasks (synthetic, zoom, dense), whose "
                 "splits are 'train' and 'eval'"),
    schema.Check("eval_image_size",
                 lambda c: c.name not in DENSE_DATASETS
                 or _eval_image_size(c) == c.image_size == _eval_resize(c),
                 lambda c: f"0 or image_size ({c.image_size}) for {c.name}, with eval_resize 0 "
                           f"or the same: dense datasets deliver both splits at image_size"),
    *(schema.Check(f"synthetic.{key}", lambda c, key=key: c.synthetic[key] >= 1, ">= 1")
      for key in ("num_classes", "train_size", "eval_size", "object_size", "frame_width",
                  "detail_period")),
    schema.Check("synthetic.image_size", lambda c: c.synthetic.image_size >= 0,
                 "0 (= image_size) or a size in pixels"),
    *(schema.Check(f"synthetic.{key}", lambda c, key=key: c.synthetic[key] >= 0, ">= 0")
      for key in ("num_distractors", "num_clutter", "seed")),
    *(schema.Check(f"zoom.{key}", lambda c, key=key: c.zoom[key] >= 1, ">= 1")
      for key in ("train_size", "eval_size", "cell_size", "frame_width", "repeats")),
    *(schema.Check(f"zoom.{key}", lambda c, key=key: c.zoom[key] >= 0,
                   "0 (= image_size) or a size in pixels" if key == "image_size" else ">= 0")
      for key in ("image_size", "num_distractors", "num_clutter", "seed")),
    *(schema.Check(f"dense.{key}", lambda c, key=key: c.dense[key] >= 1, ">= 1")
      for key in ("num_classes", "train_size", "eval_size")),
    *(schema.Check(f"dense.{key}", lambda c, key=key: c.dense[key] >= 0, ">= 0")
      for key in ("max_small", "max_large", "min_objects", "num_clutter", "seed")),
)
"""The data fields' ranges: rows of `saliency_jax.schema.Check`, run by `parse_data_config`."""


def parse_data_config(config: Any) -> dict[str, Any]:
  """Validates a data config and returns it complete, as a plain nested dict.

  Derived defaults are filled in: `eval_image_size` 0 becomes `image_size`, `eval_resize` 0
  becomes `eval_image_size`, and `synthetic.image_size` and `zoom.image_size` 0 become
  `image_size`.

  Raises:
    ValueError: naming the first unknown, mistyped or out-of-range field.
  """
  merged = schema.merge(default_data_config(), config, prefix="data")
  schema.check(merged, CHECKS, prefix="data")
  cfg = merged.to_dict()
  cfg["eval_image_size"] = cfg["eval_image_size"] or cfg["image_size"]
  cfg["eval_resize"] = cfg["eval_resize"] or cfg["eval_image_size"]
  cfg["synthetic"]["image_size"] = cfg["synthetic"]["image_size"] or cfg["image_size"]
  cfg["zoom"]["image_size"] = cfg["zoom"]["image_size"] or cfg["image_size"]
  return cfg
