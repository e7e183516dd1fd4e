r"""Dense scenes: segmentation of small and large objects, learned saliency against uniform.

    python train.py --workdir=runs/dense_scenes --config=configs/dense_scenes.py

The procedural dense task of `saliency_jax.data.dense_scenes` at 512 px: up to six small
(12-24 px) and two large (64-128 px) framed objects whose class is their fill pattern, at a
period of a quarter of their side. The zoom-unzoom model (`saliency_jax.models.dense`) warps the
image into the 128 px input of a tiny ResNet by the axis-aligned attraction grid of a learned
saliency map (LZU's and FOVEA's separable warp: x from the map's column marginal, y from its row
marginal), unwarps its stages 2-4 into the source frame at stride 8 by the exact 1-D inverse and
predicts a class per pixel there; the uniform baseline (the same network on the identity grid)
is trained second, in `<workdir>/uniform`. At 512 -> 128 a small object's pattern averages to grey under uniform
downsampling, a large one's stays readable.

Variants: `dense_scenes_prior.py` (the fixed KDE prior of the training boxes instead of a
saliency network), `dense_scenes_detection.py` (the CenterNet-style detection head),
`dense_scenes_small.py` (what the small objects need: the 2-D grid, the saliency network
supervised by the boxes at a 128 px view, the object-balanced loss, AdamW; its docstring).

Measured so far, with the 2-D attraction grid first (2026-12-03, 2-core CPU, seed 0, 600 steps
instead of 1,000; docs/dense_scenes_log.md): mIoU 28.9 % (small objects 0.5 %, large 12.2 %) against uniform's
26.8 % (0.4 %, 9.3 %): both still undertrained, not yet a comparison. With
`--config.model.segmentation_loss=class_balanced` (2026-12-04, same length, seeds 0-2):
25.3 +- 3.6 % (small 8.2 +- 2.4 %, large 10.7 +- 4.6 %) against uniform's 24.2 +- 1.5 %
(7.2 +- 1.0 %, 8.6 +- 2.1 %). The axis-aligned grid (2026-12-04, class-balanced, seeds 0-2,
600 steps): 24.6 +- 2.0 % (small 8.2 +- 2.6 %, large 10.2 +- 2.4 %), the same as the 2-D
attraction grid within the seeds' spread, for a step 13 % faster (537 against 618 ms; the unwarp
adds 8.1 % to it instead of 19.7 %, `benchmarks/dense_step.py`): hence the default.
`--config.model.detail_prior=True` (the detail prior, times the network's map, or alone with
`--config.model.saliency=none`) did not help the small objects (2026-12-05, seed 0: small-object
mIoU 6.7 and 7.7 % against uniform's 9.0 %; README). Nor did the saliency network supervised by
each image's boxes (`--config.model.saliency_supervision=1.0`, 2026-12-06, 600 steps): with the
2-D attraction grid small-object mIoU 8.9 +- 2.0 % against uniform's 7.8 +- 1.7 % (seeds 0-2, per
seed +2.3, +1.4, -0.3 points), with the axis-aligned grid 7.6 % against 8.8 % (seed 0). With AdamW
(the demo's `with_adamw` settings; 2026-12-06, seeds 0-2, class-balanced, 600 steps) both models
train further: mIoU 30.4 +- 7.0 % against uniform's 28.5 +- 1.4 %, but the warp magnifies the large
objects (large 28.6 +- 20.3 % against 16.2 +- 2.3 %) at the small ones' cost (8.7 +- 2.1 % against
12.5 +- 0.3 %); this config keeps SGD, its recorded runs' base.
"""
from configs import default


def get_config():
  config = default.common_config()
  config.data.name = "dense_scenes"
  config.data.image_size = 512
  config.data.dense.train_size = 4_000
  config.data.dense.eval_size = 200

  config.model.name = "zoom_unzoom"
  config.model.dense_head = "segmentation"
  config.model.saliency = "network"
  config.model.task_size = 128
  config.model.low_res_size = 64
  config.model.out_stride = 8
  config.model.head_width = 32
  config.model.saliency_head_init = "zero"
  config.model.antialias = True  # The demo's sampling when this config was measured.
  # Exactly and cheaply invertible (see the docstring); `False` gives the 2-D attraction grid.
  config.model.axis_aligned = True

  config.batch_size = 16
  config.num_train_steps = 1000
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.compare_with_uniform = True
  return config
