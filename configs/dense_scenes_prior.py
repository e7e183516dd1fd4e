r"""Dense scenes with a fixed saliency prior: the KDE of the training boxes (FOVEA's prior).

    python train.py --workdir=runs/dense_scenes_prior --config=configs/dense_scenes_prior.py

`dense_scenes_small.py` (the 2-D grid, the object-balanced loss, AdamW, the zero head) with
`model.saliency = "prior"` in place of the supervised saliency network: the saliency is the same
map for every image, the kernel density estimate of the boxes of the first 2,000 training images
(`saliency_jax.train.priors.box_prior`), so only the task network and head are trained. On the
dense scenes the objects are spread evenly, so the prior is close to uniform: the variant shows
what a dataset-level prior can and cannot do where the objects' positions vary per image.

Measured (2026-12-07, this project's 2-core CPU, AMD EPYC VM, 1,000 steps, seeds 0-2,
`--config.compare_with_uniform=False`): mIoU 47.1 +- 2.0 % (46.3, 45.7, 49.4), small objects 11.6 +- 1.1 % (11.3, 10.7, 12.8), large 86.4 +- 0.4 % (86.9, 86.5, 86.0);
uniform downsampling with the same settings: small 12.5 +- 0.6 %, large 39.1 +- 20.7 %; the
supervised saliency network (`dense_scenes_small.py`): small 27.3 +- 4.5 %, large 74.1 +- 5.3 %
(README, "Dense tasks: the dense scenes").
"""
from configs import dense_scenes_small


def get_config():
  config = dense_scenes_small.get_config()
  config.model.saliency = "prior"
  # Nothing to supervise, nor a network to cut the warp's gradient from.
  config.model.saliency_supervision = 0.0
  config.model.warp_gradient = True
  return config
