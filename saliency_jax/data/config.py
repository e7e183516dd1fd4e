"""The data configuration: every field with its default, and validation.

`default_data_config()` is the schema. A config given to `make_loader` or `dataset_info` may be a
`ConfigDict` or a plain dict, complete or partial (missing fields take their defaults); a field
that is not in the schema, a value of the wrong type or out of range raises a `ValueError` that
names the field, before any data is read.
"""

from __future__ import annotations

from collections.abc import Mapping
import copy
from typing import Any

import ml_collections

DATASETS = ("synthetic", "cub", "inaturalist2017", "image_folder", "gazecapture")


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
    data_dir: tfds data directory (cub, inaturalist2017; "" = tfds's default), the root of the
      image folder (image_folder), or of the extracted GazeCapture dataset (gazecapture).
    manual_dir: where the iNaturalist 2017 archives were downloaded (used when preparing);
      "" = `<data_dir>/downloads/manual`.
    num_workers: input worker processes per host; 0 prepares batches in threads of this process.
    prefetch: batches prepared ahead per worker (or threads, with num_workers = 0).
    min_crop_area: smallest area fraction of the training random-resized crop (torchvision 0.08).
    hflip: random horizontal flips in training (natural-image datasets only).
    gaze_input: GazeCapture input, "face" (the face crop) or "frame" (the whole camera frame).
    synthetic: the knobs of `saliency_jax.data.synthetic.SyntheticZoom`; `image_size` 0 means
      `image_size` above; train and eval images come from independent streams of `seed`.
  """
  return ml_collections.ConfigDict({
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
  })


def _to_dict(config: Any, name: str) -> dict[str, Any]:
  if isinstance(config, ml_collections.ConfigDict):
    return config.to_dict()
  if isinstance(config, Mapping):
    return {key: _to_dict(value, f"{name}.{key}") if isinstance(value, Mapping) else value
            for key, value in config.items()}
  raise ValueError(f"{name}: expected a ConfigDict or a dict; got {type(config).__name__}.")


def _merge(defaults: dict[str, Any], given: dict[str, Any], prefix: str) -> dict[str, Any]:
  merged = copy.deepcopy(defaults)
  for key, value in given.items():
    field = f"{prefix}.{key}"
    if key not in defaults:
      raise ValueError(f"{field}: unknown field; the data fields are "
                       f"{', '.join(sorted(defaults))}.")
    default = defaults[key]
    if isinstance(default, dict):
      if not isinstance(value, Mapping):
        raise ValueError(f"{field}: expected a dict of fields; got {value!r}.")
      merged[key] = _merge(default, dict(value), field)
      continue
    if isinstance(default, bool):
      ok = isinstance(value, bool)
    elif isinstance(default, int):
      ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
      ok = isinstance(value, (int, float)) and not isinstance(value, bool)
      value = float(value) if ok else value
    else:
      ok = isinstance(value, type(default))
    if not ok:
      raise ValueError(f"{field}: expected {type(default).__name__}; got {value!r} "
                       f"({type(value).__name__}).")
    merged[key] = value
  return merged


def parse_data_config(config: Any) -> dict[str, Any]:
  """Validates a data config and returns it complete, as a plain nested dict.

  Derived defaults are filled in: `eval_image_size` 0 becomes `image_size`, `eval_resize` 0
  becomes `eval_image_size`, and `synthetic.image_size` 0 becomes `image_size`.

  Raises:
    ValueError: naming the first unknown, mistyped or out-of-range field.
  """
  cfg = _merge(default_data_config().to_dict(), _to_dict(config, "data"), "data")

  def check(field: str, ok: bool, expected: str) -> None:
    if not ok:
      value = cfg
      for part in field.split("."):
        value = value[part]
      raise ValueError(f"data.{field}: expected {expected}; got {value!r}.")

  check("name", cfg["name"] in DATASETS, f"one of {DATASETS}")
  check("image_size", cfg["image_size"] >= 1, "a positive size in pixels")
  check("eval_image_size", cfg["eval_image_size"] >= 0, "0 (= image_size) or a size in pixels")
  if cfg["eval_image_size"] == 0:
    cfg["eval_image_size"] = cfg["image_size"]
  if cfg["eval_resize"] == 0:
    cfg["eval_resize"] = cfg["eval_image_size"]
  check("eval_resize", cfg["eval_resize"] >= cfg["eval_image_size"],
        f"0 or >= eval_image_size ({cfg['eval_image_size']}), the centre crop is taken from it")
  check("num_workers", cfg["num_workers"] >= 0, ">= 0")
  check("prefetch", cfg["prefetch"] >= 1, ">= 1")
  check("min_crop_area", 0 < cfg["min_crop_area"] <= 1, "in (0, 1]")
  check("gaze_input", cfg["gaze_input"] in ("face", "frame"), "'face' or 'frame'")
  syn = cfg["synthetic"]
  if syn["image_size"] == 0:
    syn["image_size"] = cfg["image_size"]
  for key in ("num_classes", "train_size", "eval_size", "image_size", "object_size",
              "frame_width", "detail_period"):
    check(f"synthetic.{key}", syn[key] >= 1, ">= 1")
  for key in ("num_distractors", "num_clutter"):
    check(f"synthetic.{key}", syn[key] >= 0, ">= 0")
  return cfg
