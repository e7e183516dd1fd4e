r"""Baseline: spatial transformer with an affine transform, on the synthetic zoom task.

    python train.py --workdir=runs/stn_affine --config=configs/stn_affine.py

The localisation network (the saliency network's tiny ResNet with a 6-parameter head) predicts a
crop-and-zoom, initialised to the identity. The paper (Tables 1, 2) finds the affine STN no
better than the plain network on iNaturalist (60 -> 60 top-1) and gaze; on this task it can in
principle zoom to the panel but has to learn one global transform per image.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "stn_affine"
  config.compare_with_uniform = False
  return config
