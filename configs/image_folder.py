r"""Your own images: the sampler, then uniform downsampling, on a folder of labelled images.

    python train.py --workdir=runs/my_task --config=configs/image_folder.py \
        --config.data.data_dir=DIR [--config.model.task_size=64]

DIR holds train/CLASS/*.jpg|png and val/CLASS/*.jpg|png (the class folders name the classes;
see saliency_jax/data/image_folder.py). Every image is resized to 512x512 (no crops or flips,
which could cut out or mirror the small detail that carries the class); the saliency network
looks at a 64x64 view, the task network at 128x128 (or `model.task_size`). The sampler is
trained first, then the uniform baseline with the same task network, steps and optimizer, and
both top-1 figures are printed side by side, in minutes on a CPU.

The zoom suite's settings (configs/zoom_suite.py) with the demo's sampler recipe and optimizer
(`default.with_sampler_recipe`, `default.with_adamw`: AdamW at 2e-3 for every group, for the
uniform baseline too), untuned to any one task: the sampler starts at a uniform map (zero
saliency head), which with the exact identity samples exactly as uniform downsampling, and the
task network also reads the uniform view, on the mean of the two views' losses, so that the
layer keeps what uniform downsampling reads and the warp adds what it alone reads (the task
network runs twice per image); the map learns where to zoom from where the task network finds
its evidence in the view it reads, weighted by its confidence, and only from that (the warp's
gradient is cut), and only once the task network reads something (the saliency hold: no update
until the training loss falls below 0.9 of chance; a run that never gets there ends as uniform
downsampling, and says so). What it gave on the suite's families, measured over seeds, is in
the README's zoom-suite table; on a folder of your own, run several `--config.seed`s before
trusting one number.
"""
from configs import default
from configs import zoom_suite


def get_config():
  config = zoom_suite.get_config()
  config.data.name = "image_folder"
  config.data.hflip = False
  config.data.min_crop_area = 1.0
  config.data.eval_resize = 0
  config.num_train_steps = 1200
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  # The demo's recipe and optimizer (configs/default.py), for both models.
  default.with_adamw(default.with_sampler_recipe(config))
  config.compare_with_uniform = True
  return config
