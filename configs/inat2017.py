r"""iNaturalist 2017: ResNet-101 task network at 227 px, 14-layer saliency network (Table 2).

    python -m saliency_jax.data.prepare --dataset=inaturalist2017 --data_dir=DATA \
        --manual_dir=MANUAL                                                      (once)
    python train.py --workdir=runs/inat2017 --config=configs/inat2017.py \
        --config.data.data_dir=DATA \
        --config.pretrained.task_net=resnet101.pth \
        --config.pretrained.saliency_backbone=resnet18.pth

Training sees random-resized 800x800 crops of the originals (paper, Sec. 4.2); evaluation, as in
the paper, the 512x512 centre crop (of the image resized to 800 on its shorter side). Other
models of Table 2: `--config=configs/inat2017.py:<name>` with name uniform (the plain
ResNet-101), stn_affine, stn_tps, grid_estimator, cam_crop or deformable; uniform, cam_crop and
deformable have no saliency or localisation network, so drop
`--config.pretrained.saliency_backbone` for them.

Paper: top-1 / top-5 60 / 83 (ResNet-101 at 227) -> 65 / 86 with the saliency sampler. The
optimizer follows the authors' ImageNet recipe (SGD momentum 0.9, weight decay 1e-4, x0.1 every
30 epochs, blur warm-up, learning-rate multipliers 1 / 0.01 / 0.001) with a fine-tuning rate of
0.01 at batch 256; the paper gives no iNaturalist schedule, and this one has not been run here.
"""
from saliency_jax.train import base_config


def get_config(model: str = "saliency_sampler"):
  config = base_config()
  config.data.name = "inaturalist2017"
  config.data.image_size = 800
  config.data.eval_image_size = 512
  config.data.eval_resize = 800
  config.data.num_workers = 16

  config.model.name = model
  config.model.task_net = "resnet101"
  config.model.task_size = 227
  config.model.low_res_size = 227
  config.model.saliency_backbone = "resnet18"
  config.model.saliency_depth = 14

  config.batch_size = 256
  config.num_epochs = 60.0
  config.blur_epochs = 10.0
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = "step"
  config.optimizer.decay_epochs = 20.0
  config.optimizer.weight_decay = 1e-4

  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.eval_every_steps = 0
  return config
