"""Input pipelines: high-resolution uint8 batches, sharded over the devices of every host.

`make_loader(data_config, split=..., global_batch_size=..., mesh=..., seed=...)` is what the
trainer uses; `dataset_info` tells it the task and sizes, `default_data_config` lists every field.
The sources (synthetic zoom task, CUB-200, iNaturalist 2017, image folders, GazeCapture) and
the augmentations can also be used on their own; `DenseScenes` (`data.name="dense_scenes"`) is the
procedural segmentation and detection source (masks and boxes) of the dense model, Cityscapes
(`data.name="cityscapes"`) and PASCAL VOC 2012 (`"voc2012"`) its real datasets (this project's
tfds builders over the manual downloads), and `training_boxes` what its fixed saliency prior is
estimated from. Preparing the tfds datasets:
`python -m saliency_jax.data.prepare --help`.
"""

from saliency_jax.data.config import DATASETS
from saliency_jax.data.config import default_data_config
from saliency_jax.data.config import parse_data_config
from saliency_jax.data.datasets import DatasetInfo
from saliency_jax.data.datasets import dataset_info
from saliency_jax.data.datasets import make_source
from saliency_jax.data.datasets import training_boxes
from saliency_jax.data.dense_scenes import DenseScenes
from saliency_jax.data.image_folder import ImageFolderSource
from saliency_jax.data.loader import Loader
from saliency_jax.data.loader import make_loader
from saliency_jax.data.synthetic import SyntheticZoom
from saliency_jax.data.transforms import BadImageError
from saliency_jax.data.transforms import decode_image
from saliency_jax.data.transforms import eval_transform
from saliency_jax.data.transforms import train_transform

__all__ = [
    "DATASETS",
    "BadImageError",
    "DatasetInfo",
    "DenseScenes",
    "ImageFolderSource",
    "Loader",
    "SyntheticZoom",
    "dataset_info",
    "decode_image",
    "default_data_config",
    "eval_transform",
    "make_loader",
    "make_source",
    "parse_data_config",
    "train_transform",
    "training_boxes",
]
