r"""Baseline: spatial transformer with an affine transform, on the synthetic zoom task.

    python train.py --workdir=runs/stn_affine --config=configs/stn_affine.py

The localisation network (the saliency network's tiny ResNet with a 6-parameter head) predicts a
crop-and-zoom, initialised to the identity. The paper (Tables 1, 2) finds the affine STN no
better than the plain network on iNaturalist (60 -> 60 top-1) and gaze; on this task it can in
principle zoom to the panel but has to learn one global transform per image.

Measured here (seed 0, 1,200 steps, 2-core CPU, 2026-12-05; the demo's sampler 100.0 % (73.8 % with
plain bilinear sampling), uniform 54.3 %): top-1 66.5 % with the localisation network's learning-
rate multipliers at 0.01 (set here), 14.7 % with the demo's 0.1 (measured with an earlier version of
the code), where the transform drifts off the image within 400 steps and samples only zeros. A
single target per image suits one affine crop well.
"""
from configs import default


def get_config():
  config = default.common_config()
  config.model.name = "stn_affine"
  # The better of 0.1 (the demo's) and 0.01, measured above.
  config.optimizer.lr_multipliers.saliency_head = 0.01
  config.optimizer.lr_multipliers.saliency_backbone = 0.01
  config.compare_with_uniform = False
  return config
