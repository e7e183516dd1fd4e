r"""Baseline: deformable convolutions in the task network's last three convolutions.

    python train.py --workdir=runs/deformable --config=configs/deformable.py

The input is downsampled uniformly, as for configs/uniform.py; the deformable layers can only
rearrange what survived. The paper (Table 2): 44 top-1 on iNaturalist, below the plain network.

Measured here (seed 0, 1,200 steps, 2-core CPU, 2026-12-05; the demo's sampler 100.0 % (73.8 % with
plain bilinear sampling), uniform 54.3 %): top-1 16.8 %, below the plain network here too.
"""
from configs import default


def get_config():
  config = default.common_config()
  config.model.name = "deformable"
  config.model.deformable_convs = 3
  config.compare_with_uniform = False
  return config
