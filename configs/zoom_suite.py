r"""The zoom-task suite's recipe: the sampler on one family of `saliency_jax.data.zoom_tasks`.

    python train.py --workdir=runs/zoom_glyph --config=configs/zoom_suite.py \
        --config.data.name=zoom_glyph --config.model.task_size=64

One recipe for every family and task size, untuned to any of them (what `benchmarks/zoom_suite.py`
runs, with only `data.name`, `model.task_size`, `model.name` and `seed` changed): 512 px images,
the saliency network sees a 64x64 view, tiny ResNets trained from scratch, the demo's optimizer,
and the sampler starts as uniform downsampling (a zero saliency head: uniform map, identity
grid), so that it can only move away from the baseline where the task gains by it. The uniform
baseline is trained second with the same everything (`compare_with_uniform`).

Measured (README, "The zoom-task suite"; every run in docs/zoom_suite_log.md and
benchmarks/results/zoom_suite_cpu.json): with the suite's distractor tiles a tiny ResNet reads
nothing at any size in 600 steps, uniform included, so the suite is measured with
`--set=data.zoom.repeats=4 --set=data.zoom.num_distractors=0`. There, with AdamW for both
models and the project's recipe for the sampler (`--sampler_recipe`, `models.SAMPLER_RECIPE` since
2026-12-07 afternoon), at 128 px (4x): counts 74.6 +- 29.2 % against uniform's 43.1 +- 24.5 %
(seeds 0-4), glyphs 50.9 +- 24.5 % against 53.0 +- 17.2 % (seeds 0-7); at 64 px (8x) both at
chance on the counts (26.1 +- 3.2 % against 26.5 +- 4.3 %). In about one run in four of either
model the task network stays at chance for the whole run (the take-off lottery), which sets
these spreads.
This config stays the paper's layer with the zero head, the recorded runs' base; a recipe is a
`--tag` with its `--set`s.
"""
from configs import default


def get_config():
  config = default.common_config()
  config.data.name = "zoom_glyph"
  config.data.image_size = 512
  config.data.zoom.train_size = 20_000
  config.data.zoom.eval_size = 500

  config.model.task_size = 128
  config.model.low_res_size = 64
  config.model.saliency_head_init = "zero"

  config.num_train_steps = 600
  config.eval_every_steps = 600
  config.checkpoint_every_steps = 300
  config.num_panels = 4
  config.compare_with_uniform = True
  return config
