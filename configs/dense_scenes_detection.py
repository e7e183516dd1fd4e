r"""Dense scenes, detection: the CenterNet-style head (centre heatmaps, sizes, offsets).

    python train.py --workdir=runs/dense_scenes_detection \
        --config=configs/dense_scenes_detection.py

`dense_scenes.py` with `model.dense_head = "detection"`: AP at IoU 0.5, overall and on the small
and the large objects (`saliency_jax.train.dense_metrics`), against the uniform baseline.

Result: not measured yet (README, "Dense tasks").
"""
from configs import dense_scenes


def get_config():
  config = dense_scenes.get_config()
  config.model.dense_head = "detection"
  return config
