r"""Your own images: the sampler, then uniform downsampling, on a folder of labelled images.

    python train.py --workdir=runs/my_task --config=configs/image_folder.py \
        --config.data.data_dir=DIR [--config.model.task_size=64]

DIR holds train/CLASS/*.jpg|png and val/CLASS/*.jpg|png (the class folders name the classes;
see saliency_jax/data/image_folder.py). Every image is resized to 512x512 (no crops or flips,
which could cut out or mirror the small detail that carries the class); the saliency network
looks at a 64x64 view, the task network at 128x128 (or `model.task_size`). The sampler is
trained first, then the uniform baseline with the same task network, steps and optimizer, and
both top-1 figures are printed side by side, in minutes on a CPU.

The recipe is the zoom suite's (configs/zoom_suite.py), untuned to any one task, with the demo's
anti-aliased sampling: the sampler starts at a uniform map (zero saliency head), where the
authors' grid is close to uniform downsampling but not equal to it (`model.exact_identity`). What it gave on the suite's
families, measured over seeds, is in the README's zoom-suite table; on a folder of your own, run
several `--config.seed`s before trusting one number.
"""
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
  config.model.antialias = True  # As the demo: it raised the demo's top-1 on every seed.
  config.compare_with_uniform = True
  return config
