r"""The demo's baseline on its own: uniform downsampling (area averaging) to the task size.

    python train.py --workdir=runs/uniform --config=configs/uniform.py

Same data, task network, steps and optimizer as configs/default.py, without a sampler: the
texture is averaged away, so accuracy stays near chance (1/6) on the synthetic task.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "uniform"
  config.compare_with_uniform = False
  return config
