r"""CUB-200-2011: ResNet-50 task network at 227 px, 14-layer saliency network (paper, Table 4).

    python -m saliency_jax.data.prepare --dataset=cub --data_dir=DATA      (once)
    python train.py --workdir=runs/cub200 --config=configs/cub200.py \
        --config.data.data_dir=DATA \
        --config.pretrained.task_net=resnet50.pth \
        --config.pretrained.saliency_backbone=resnet18.pth

The .pth files are torchvision's ImageNet checkpoints (resnet50-0676ba61.pth,
resnet18-f37072fd.pth; `saliency_jax.models.convert` reads them, or converted .npz files).
Add `--config=configs/cub200.py:uniform` for the ResNet-50 baseline without the sampler (and
drop `--config.pretrained.saliency_backbone`: the baseline has no saliency network to load it).

Paper: top-1 81.6 (ResNet-50 at 227) -> 84.5 with the saliency sampler. The authors published
no CUB hyper-parameters; the schedule here (SGD 0.01, batch 64, 90 epochs, x0.1 every 30, blur
for the first 10) is this project's choice and has not been run to the end here.
"""
from saliency_jax.train import base_config


def get_config(model: str = "saliency_sampler"):
  config = base_config()
  config.data.name = "cub"
  # Random-resized crops of 800x800; evaluation: the 700x700 centre crop of the image resized to
  # 800, as the authors' ImageNet code (the paper gives no CUB pipeline).
  config.data.image_size = 800
  config.data.eval_image_size = 700
  config.data.eval_resize = 800
  config.data.num_workers = 8

  config.model.name = model
  config.model.task_net = "resnet50"
  config.model.task_size = 227
  config.model.low_res_size = 227
  config.model.saliency_backbone = "resnet18"
  config.model.saliency_depth = 14

  config.batch_size = 64
  config.num_epochs = 90.0
  config.blur_epochs = 10.0
  config.optimizer.learning_rate = 0.01  # Both networks start pretrained.
  config.optimizer.schedule = "step"
  config.optimizer.decay_epochs = 30.0
  config.optimizer.weight_decay = 1e-4

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.eval_every_steps = 0  # Once per epoch.
  return config
