r"""The saliency-network depth ablation on iNaturalist 2017 (paper, Table 3): 6, 10 or 14 layers.

    python train.py --workdir=runs/inat_depth6 --config=configs/inat2017_depth.py:6 \
        --config.data.data_dir=DATA --config.pretrained.task_net=resnet101.pth \
        --config.pretrained.saliency_backbone=resnet18.pth

The argument is the number of ResNet-18 layers kept in the saliency network (6: up to layer1,
10: layer2, 14: layer3). Everything else is configs/inat2017.py.

Paper: top-1 62 / 64 / 65 and top-5 84 / 85 / 86 for 6 / 10 / 14 layers (no sampler: 60 / 83).
"""
from configs import inat2017


def get_config(depth: str = "14"):
  config = inat2017.get_config()
  config.model.saliency_depth = int(depth)
  return config
