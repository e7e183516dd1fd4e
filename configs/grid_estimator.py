r"""Baseline: the saliency network regresses the sampling grid directly (no saliency map).

    python train.py --workdir=runs/grid_estimator --config=configs/grid_estimator.py

The paper's "Grid Estimator": 61 top-1 on iNaturalist (sampler 65), 3.91 cm gaze error on iPad
(sampler 3.29): without the attraction kernel the grid is hard to learn.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "grid_estimator"
  config.compare_with_uniform = False
  return config
