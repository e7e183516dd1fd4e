r"""Dense scenes, set up for the small objects: a supervised saliency network that sees them.

    python train.py --workdir=runs/dense_scenes_small --config=configs/dense_scenes_small.py

`dense_scenes.py` with the changes that, measured one at a time, stood between the learned warp
and the small objects (docs/dense_scenes_log.md; the results in the README, "Dense tasks: the
dense scenes"):
- the 2-D attraction grid (`model.axis_aligned=False`): from a perfect map (the KDE of each
  image's true boxes) the axis-aligned grid magnifies a small object by a median 1.5x and gives
  one in eight no pixel at all, the 2-D grid 2.5x (`benchmarks/dense_oracle.py`), where a small
  object's pattern needs about 2x to survive 512 -> 128;
- the saliency network supervised by each image's boxes (`model.saliency_supervision=1.0`, the
  KL divergence of its map from the boxes' KDE), since the task's gradient through the unwarp
  alone did not move the warp towards them;
- its view at 128 px (`model.low_res_size=128`): at 64 px a small object's frame is 1.5 to 3
  pixels and the supervised map peaked on the large objects only;
- the object-balanced loss (`model.segmentation_loss="object_balanced"`), so that a small object
  weighs in the loss as much as a large one of its class;
- AdamW at 2e-3 for every group (`default.with_adamw`), with which both models train further in
  the same steps;
- the warp's gradient cut (`model.warp_gradient=False`): the grid is made from the map without
  gradient, so that the saliency network learns from the boxes alone, whose gradient is
  consistent where the task's through the warp and the unwarp is noise that, under Adam, sets the
  step.
- the head's last convolution at zero (`model.task_head_init="zero"`): every pixel's logits
  start equal, where the default initialisation started them at several nats (first 50 steps'
  loss 2.5 to 4.9), and the task network, the sampler's and uniform's alike, took off in some
  seeds only.

Measured (2026-12-06, this project's 2-core CPU, AMD EPYC VM; 600 steps instead of 1,000,
`--config.num_train_steps=600`; the uniform baseline, trained after each seed by
`compare_with_uniform`, has the same loss and optimizer), seeds 0-2: mIoU 31.0 +- 7.3 %
(36.9, 33.2, 22.8), small objects 14.8 +- 6.5 % (21.4, 14.7, 8.3), large 28.5 +- 20.0 %; uniform
26.3 +- 0.5 %, small 12.2 +- 1.0 % (13.1, 11.1, 12.5), large 13.6 +- 0.9 %. Small objects
+2.6 +- 6.3 points over uniform per seed (+8.3, +3.7, -4.2; seed 2's task network still
predicted one class everywhere at step 600): not yet the issue's +10. At the config's 1,000 steps
(2026-12-07), seeds 0-2: mIoU 36.0 +- 10.7 % (38.3, 45.4, 24.4), small 14.4 +- 3.2 % (15.4,
17.0, 10.9), large 35.6 +- 25.5 %; uniform 27.1 +- 0.6 %, small 12.2 +- 1.2 % (12.1, 11.0,
13.5), large 13.5 +- 1.1 %. Small objects +2.3 +- 4.4 points per seed (+3.3, +6.1, -2.5).
With the warp's gradient cut (this config since 2026-12-07 noon), seeds 0-4, each against its
uniform run: mIoU 37.0 +- 11.2 % (42.8, 46.8, 23.8, 26.0, 45.5), small 20.0 +- 9.4 % (29.3, 24.9,
10.7, 9.1, 26.3), large 48.4 +- 34.6 % (67.7, 77.4, 8.9, 12.4, 75.4); uniform 35.0 +- 10.9 %,
small 12.5 +- 1.0 % (12.1, 11.0, 13.4, 13.2, 13.0), large 35.3 +- 30.2 % (12.1, 14.1, 14.1, 62.0,
74.2). Small objects +7.5 +- 10.1 points per seed (+17.2, +13.9, -2.7, -4.1, +13.3): every
seed's map magnifies the small objects, and in seeds 2 and 3 the task network still predicted
one or two classes for most objects at step 1,000 (the take-off lottery, which uniform's large
objects show too). With the head's last convolution at zero (this config since 2026-12-07
afternoon; 12:00-13:21 UTC, the uniform runs trained alone with `compare_with_uniform`'s
baseline settings), seeds 0-2: mIoU 47.1 +- 1.9 % (46.0, 49.3, 46.0), small objects
27.3 +- 4.5 % (30.2, 29.7, 22.1), large 74.1 +- 5.3 % (71.8, 80.2, 70.4); uniform 39.0 +- 7.5 %,
small 12.5 +- 0.6 % (12.8, 12.9, 11.8), large 39.1 +- 20.7 % (24.1, 30.5, 62.7). Small objects
+14.8 +- 3.9 points over uniform per seed (+17.4, +16.8, +10.3): the issue's +10 on the mean and
in every seed; seed 2, which had not taken off, reads. Seed 3 (2026-12-07, 15:36-15:52 UTC, with
its uniform run by `compare_with_uniform`): mIoU 47.1 %, small 26.4 %, large 80.6 % against
uniform's 55.7, 13.9 and 85.5 % (uniform's task network took off fully there: the learned warp
costs the large objects 4.9 points); seeds 0-3: small objects +14.3 +- 3.4 points per seed.
"""
from configs import default
from configs import dense_scenes


def get_config():
  config = default.with_adamw(dense_scenes.get_config())
  config.model.axis_aligned = False
  config.model.saliency_supervision = 1.0
  config.model.low_res_size = 128
  config.model.segmentation_loss = "object_balanced"
  config.model.warp_gradient = False
  config.model.task_head_init = "zero"
  return config
