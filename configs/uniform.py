r"""The demo's baseline on its own: uniform downsampling (area averaging) to the task size.

    python train.py --workdir=runs/uniform --config=configs/uniform.py

Same data, task network, steps and optimizer (AdamW) as configs/default.py, without a sampler.
Uniform downsampling by 4 samples the texture (period 8) at exactly twice its frequency, which
leaves it readable for some phases only. Measured here (seeds 0-2, 1,200 steps, 2-core CPU, AMD
EPYC VM, 2026-12-06): top-1 57.3 / 56.8 / 55.8 % (56.7 +- 0.8 %), against 99.3 +- 0.6 % for the
sampler (chance 16.7 %).
"""
from configs import default


def get_config():
  config = default.with_adamw(default.common_config())
  config.model.name = "uniform"
  config.compare_with_uniform = False
  return config
