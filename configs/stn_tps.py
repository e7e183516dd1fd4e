r"""Baseline: spatial transformer with a thin-plate spline (4x4 control points), synthetic task.

    python train.py --workdir=runs/stn_tps --config=configs/stn_tps.py

The paper (Table 2) reports 62 top-1 for STN-TPS on iNaturalist against 65 for the sampler.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "stn_tps"
  config.model.tps_points_per_side = 4
  config.compare_with_uniform = False
  return config
