r"""The demo: the saliency sampler against uniform downsampling on the synthetic zoom task.

    python train.py --workdir=runs/demo        (what `make demo` runs)

Each 256x256 image holds a 48-pixel panel of black-and-white texture (period 8 pixels) in a
yellow frame, one distractor panel in another frame colour and two plain rectangles; the label
is the texture's class (6 classes). The task network sees 64x64 pixels. Uniform downsampling
by 4 (area averaging) leaves the texture readable only for some phases of the pattern, and
averages it to flat grey for others; the sampler finds the yellow frame in its 64x64 view and
magnifies the panel, so that every phase can be read. Both models are tiny ResNets (resnet_tiny)
trained from scratch for the same 1,200 steps of 32 images with the same optimizer (AdamW,
`with_adamw`); the uniform baseline is trained second, in runs/demo/uniform, and both accuracies
are printed.

The sampler takes the project's recipe (`with_sampler_recipe`: anti-aliased sampling, the task
network also reading the uniform view, trained on the mean of the two views' losses, the exact
identity, the saliency map taught by the task network's evidence in the view it reads, weighted
by its confidence, with the warp's gradient cut, gradients clipped per parameter group), chosen
by what held over seeds on this task and on the zoom suite (README, Results), but for the
recipe's saliency hold, which this task does not want (below), and its
magnification is capped at the source's own resolution (`model.cap_at_source`). Measured (this
project's 2-core CPU machine, an AMD EPYC VM, 2026-12-07, seeds 0-4): the sampler 97.7 / 98.7 /
99.8 / 98.5 / 99.5 % top-1 (98.8 +- 0.9 %; without the evidence and the cut, the recipe until
2026-12-07, 100.0 / 99.8 / 99.8 / 99.7 / 99.7 %, 99.8 +- 0.1 %, 2026-12-06 21:10-22:25 UTC: the
evidence costs this task a point and helps the suite's counts by 30, README; with the recipe's
hold, 2026-12-08 00:23-00:34 UTC, 98.7 / 78.0 / 97.2 / 95.3 / 99.7 %, 93.8 +- 8.9 %), uniform
downsampling 57.3 / 56.8 / 55.8 % over seeds 0-2 (56.7 +- 0.8 %; chance 16.7 %). With
SGD (the demo until 2026-12-06; Intel VM) the sampler read 99.8 / 95.7 / 99.8 / 17.5 / 100.0 %
(82.6 +- 36.4 %: seed 3's task network never took off; on the AMD VM seed 0 stalled instead,
15.0 %); the recipe without the cap gave 92.1 +- 10.9 %, the paper's layer with anti-aliasing
alone 85.7 +- 31.6 % (both SGD). The cap is chosen on this task alone: on the
zoom suite's glyphs and counts at 2x it made seed 1 of both fail to take off (README, the
zoom-task suite), so the library's recipe (`models.SAMPLER_RECIPE`) leaves it out. The panels
are in runs/demo/panels (one is in the README).

Choices that differ from the authors' ImageNet recipe, and why:
- AdamW at 2e-3 for every parameter group instead of SGD with multipliers 1 / 0.01 / 0.001: the
  authors' small rates protect a *pretrained* saliency ResNet, and this one starts from scratch
  and must learn; SGD's first steps overshot the task network into a stall at chance in about
  one seed of five (README, the demo);
- a short linear warm-up and gradient clipping at norm 2: without them the first large
  gradients can push the saliency map into one image-independent peak, which samples a single
  flat colour and from which no gradient leads back (the degenerate solution the blur warm-up
  is meant to avoid, reached here within a few hundred steps);
- no blur warm-up: in this short run it only delays learning;
- the sampler's recipe without its hold, and the cap above (README, the demo, for each part
  alone).
"""
from saliency_jax import models
from saliency_jax.train import base_config


# The recipe's optimizer fields: gradients clipped per parameter group, so that the task
# network's large early gradients do not scale the saliency network's step away; the saliency
# network held until the training loss falls below 0.9 of chance, so that the map does not move
# each image's view while the task network still reads nothing (README, the zoom-task suite).
RECIPE_OPTIMIZER = {"clip_per_group": True, "saliency_delay_loss": 0.9}


def with_sampler_recipe(config):
  """`config` (in place, and returned) with the sampler's recipe: the library's
  `models.SAMPLER_RECIPE` (anti-aliased sampling, the uniform view with each view on its own
  loss, the exact identity, the task network's evidence as the map's only teacher) and
  `RECIPE_OPTIMIZER` (README, the demo and the zoom-task suite)."""
  config.model.update(models.SAMPLER_RECIPE)
  config.optimizer.update(RECIPE_OPTIMIZER)
  return config


def with_adamw(config):
  """`config` (in place, and returned) trained with AdamW at 2e-3, every parameter group at the
  same rate: its step does not scale with the gradient, which from scratch keeps the task
  network's first steps from overshooting into a stall at chance, and lets the saliency network
  learn at a rate of its own whatever the size of its gradient through the warp (README, the
  demo). Its weight decay is decoupled (times the rate): 5e-5 here, next to nothing."""
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 0.002
  config.optimizer.lr_multipliers = {"task": 1.0, "saliency_head": 1.0, "saliency_backbone": 1.0}
  return config


def common_config():
  """The demo's task, networks, optimizer and schedule, with the library's model defaults (the
  paper's layer): what the demo's sampler and the paper's baselines (configs/*.py) share."""
  config = base_config()
  config.seed = 0

  config.data.name = "synthetic"
  config.data.image_size = 256
  synthetic = config.data.synthetic
  synthetic.num_classes = 6
  synthetic.train_size = 20_000
  synthetic.eval_size = 600
  synthetic.object_size = 48
  synthetic.frame_width = 6
  synthetic.detail_period = 8
  synthetic.num_distractors = 1
  synthetic.num_clutter = 2

  config.model.name = "saliency_sampler"
  config.model.task_net = "resnet_tiny"
  config.model.task_size = 64
  config.model.low_res_size = 64
  config.model.saliency_backbone = "resnet_tiny"
  config.model.saliency_depth = 10

  config.batch_size = 32
  config.num_train_steps = 1200  # 1.9 epochs of the 20,000 training images.
  config.blur_epochs = 0.0
  config.optimizer.learning_rate = 0.05
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 0.1
  config.optimizer.grad_clip_norm = 2.0
  config.optimizer.weight_decay = 5e-5
  config.optimizer.lr_multipliers = {"task": 1.0, "saliency_head": 0.1, "saliency_backbone": 0.1}

  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  config.num_panels = 4
  return config


def get_config():
  config = with_adamw(with_sampler_recipe(common_config()))
  # Never magnify past the source's own resolution (4x here): the cap leaves the zoom the task
  # needs and takes away the degenerate grid that shrinks to a point, which some seeds found
  # (README, the demo: chosen there; not on the zoom suite).
  config.model.cap_at_source = True
  # Without the recipe's saliency hold: on this task the map's early moves help, and held until
  # step ~170 it read 93.8 +- 8.9 % over the 5 seeds against 98.8 +- 0.9 % (README, the demo).
  config.optimizer.saliency_delay_loss = 0.0
  config.compare_with_uniform = True
  return config
