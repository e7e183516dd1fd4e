r"""GazeCapture: AlexNet task network at 227 px, 10-layer saliency network (paper, Table 1).

    python train.py --workdir=runs/gaze --config=configs/gaze.py \
        --config.data.data_dir=GAZECAPTURE --config.pretrained.task_net=alexnet.pth \
        --config.pretrained.saliency_backbone=resnet18.pth

GAZECAPTURE is the extracted dataset (one folder per recording, see saliency_jax.data). The
sampler sees the whole camera frame, so that it can zoom on the eyes and still see where the
head is; the output is the gaze point (x, y) in centimetres from the camera, and the metric the
mean distance error in cm. `--config=configs/gaze.py:uniform` gives the plain AlexNet (likewise
stn_affine, stn_tps, grid_estimator, deformable; for uniform and deformable, which have no
saliency network, drop `--config.pretrained.saliency_backbone`).

Paper: mean error iPad 5.44 -> 3.29 cm, iPhone 2.63 -> 2.03 cm (plain AlexNet -> sampler); the
evaluation here reports the error over both devices and per device (`distance/phone`,
`distance/tablet` in results.json and TensorBoard). The paper ends AlexNet with a sigmoid;
targets in centimetres need a linear output (a sigmoid would first need the targets rescaled to
0..1, which the data pipeline does not do), so `output_activation` is None. No gaze
hyper-parameters were published; these are this project's choice and have not been run here.
"""
from saliency_jax.train import base_config


def get_config(model: str = "saliency_sampler"):
  config = base_config()
  config.data.name = "gazecapture"
  config.data.gaze_input = "frame"
  config.data.image_size = 640  # The frames' longer side.
  config.data.num_workers = 8

  config.model.name = model
  config.model.task_net = "alexnet"
  config.model.task_size = 227
  config.model.low_res_size = 227
  config.model.saliency_backbone = "resnet18"
  config.model.saliency_depth = 10
  config.model.output_activation = None

  config.batch_size = 128
  config.num_epochs = 25.0
  config.blur_epochs = 5.0
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = "step"
  config.optimizer.decay_epochs = 10.0
  config.optimizer.weight_decay = 5e-4

  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.eval_every_steps = 0
  return config
