r"""Baseline: the saliency network regresses the sampling grid directly (no saliency map).

    python train.py --workdir=runs/grid_estimator --config=configs/grid_estimator.py

The paper's "Grid Estimator": 61 top-1 on iNaturalist (sampler 65), 3.91 cm gaze error on iPad
(sampler 3.29): without the attraction kernel the grid is hard to learn.

Measured here (seed 0, 1,200 steps, 2-core CPU, 2026-12-05; the demo's sampler 100.0 % (73.8 % with
plain bilinear sampling), uniform 54.3 %): top-1 17.0 % with the estimator's learning-rate
multipliers at 0.01 (set here), 13.5 % with the demo's 0.1 (an earlier version of the code); the
panels show the grid folding over itself, which the attraction kernel rules out.
"""
from configs import default


def get_config():
  config = default.common_config()
  config.model.name = "grid_estimator"
  # The better of 0.1 (the demo's) and 0.01, measured above.
  config.optimizer.lr_multipliers.saliency_head = 0.01
  config.optimizer.lr_multipliers.saliency_backbone = 0.01
  config.compare_with_uniform = False
  return config
