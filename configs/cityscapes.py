r"""Cityscapes segmentation (19 classes): learned saliency against uniform downsampling.

    python -m saliency_jax.data.prepare --dataset=cityscapes --data_dir=DIR --manual_dir=MANUAL
    python train.py --workdir=runs/cityscapes --config=configs/cityscapes.py \
        --config.data.data_dir=DIR

Cityscapes' fine annotations (`saliency_jax/data/cityscapes.py`; the two zips are a manual
download after registration): 2,975 training and 500 validation street scenes of 2048x1024,
each resized whole to 1024x1024 (the aspect ratio is not kept: everything is half as wide) with
its mask (trainIds, nearest neighbour) and the boxes of its person, rider, car, truck, bus,
train, motorcycle and bicycle instances, flipped horizontally in training. The zoom-unzoom
model warps the 1024 px image into the 512 px input of a ResNet-18 by the attraction grid of a
learned saliency map (computed on a 128 px view), unwarps its stages 2-4 at stride 8 and
predicts a class per pixel; the uniform baseline (the same network on the identity grid) is
trained second, in `<workdir>/uniform`.
Start the ResNet from ImageNet weights with `--config.pretrained.task_net=PATH` (a torchvision
checkpoint converted by `python -m saliency_jax.models.convert`).

Void pixels (unlabelled, ego vehicle, out of roi, ...) count for nothing in the loss and the
metrics; no pixel is background, so "miou" is over the 19 classes, as the official mIoU (the
background channel of the head is never a target, and never scored unless predicted).

Result: nothing measured. The data cannot be downloaded on this project's machine (no access to
cityscapes-dataset.com); only a tiny generated copy in the official layout is trained on, in
tests/test_data_dense_real.py. Detection: `--config.model.dense_head=detection`.
"""
from configs import dense_scenes


def get_config():
  config = dense_scenes.get_config()
  config.data.name = "cityscapes"
  config.data.image_size = 1024
  config.data.hflip = True
  config.data.max_boxes = 128

  config.model.task_net = "resnet18"
  config.model.task_size = 512
  config.model.low_res_size = 128
  config.model.out_stride = 8
  config.model.head_width = 64

  config.batch_size = 8
  config.num_train_steps = 15_000  # 40 epochs of the 2,975 training images.
  config.eval_every_steps = 2_500
  config.checkpoint_every_steps = 2_500
  config.compare_with_uniform = True
  return config
