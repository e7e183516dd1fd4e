r"""PASCAL VOC 2012 detection (20 classes, the segmentation subset): saliency against uniform.

    python -m saliency_jax.data.prepare --dataset=voc2012 --data_dir=DIR --manual_dir=MANUAL
    python train.py --workdir=runs/voc2012 --config=configs/voc2012.py \
        --config.data.data_dir=DIR

VOC 2012's segmentation subset (`saliency_jax/data/voc.py`; the trainval tar, or its extracted
`VOCdevkit/VOC2012/`, in the manual directory): 1,464 training and 1,449 validation photographs
of about 500x375, each resized whole to 512x512 (the aspect ratio is not kept) with its boxes
(from the XML annotations) and its mask, flipped horizontally in training. The zoom-unzoom
model with the CenterNet-style head (centre heatmaps, sizes, offsets; AP at IoU 0.5, overall and
on the small and the large objects) warps the 512 px image into the 256 px input of a
ResNet-18 by a learned saliency map, against the uniform baseline trained second in
`<workdir>/uniform`. The same data trains segmentation with
`--config.model.dense_head=segmentation` (VOC's void boundaries count for nothing in the loss
and the metrics). Start the ResNet from ImageNet weights with
`--config.pretrained.task_net=PATH` (converted by `python -m saliency_jax.models.convert`).

Result: nothing measured. The data cannot be downloaded on this project's machine; only a tiny
generated copy in the official layout is prepared and loaded, in tests/test_data_dense_real.py.
"""
from configs import dense_scenes


def get_config():
  config = dense_scenes.get_config()
  config.data.name = "voc2012"
  config.data.image_size = 512
  config.data.hflip = True
  config.data.max_boxes = 64

  config.model.dense_head = "detection"
  config.model.task_net = "resnet18"
  config.model.task_size = 256
  config.model.low_res_size = 128
  config.model.out_stride = 8
  config.model.head_width = 64

  config.batch_size = 16
  config.num_train_steps = 4_600  # 50 epochs of the 1,464 training images.
  config.eval_every_steps = 1_000
  config.checkpoint_every_steps = 1_000
  config.compare_with_uniform = True
  return config
