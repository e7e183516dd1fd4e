"""CUB-200-2011 (Caltech-UCSD Birds) through the tfds catalogue's `caltech_birds2011`.

200 classes, 5,994 training and 5,794 test images (the paper's CUB-200 experiment, ResNet-50 at
227 px: 81.6 -> 84.5 top-1 with the saliency sampler). tfds downloads the official archives
itself; preparing needs TensorFlow and OpenCV once (the builder reads the segmentation masks
with them), reading does not:

    pip install tensorflow-cpu opencv-python-headless
    python -m saliency_jax.data.prepare --dataset=cub --data_dir=DIR
"""

from __future__ import annotations

from saliency_jax.data import tfds_source

TFDS_NAME = "caltech_birds2011"
NUM_CLASSES = 200
SPLITS = {"train": "train", "eval": "test"}


def prepare_command(data_dir: str) -> str:
  return f"python -m saliency_jax.data.prepare --dataset=cub --data_dir={data_dir or 'DIR'}"


def cub_source(split: str, *, data_dir: str) -> tfds_source.TfdsImageSource:
  """The CUB records of a tfds split ("train" or "test").

  Raises:
    FileNotFoundError: if the dataset has not been prepared (the message gives the command).
  """
  source = tfds_source.open_tfds_source(TFDS_NAME, split=split, data_dir=data_dir,
                                        prepare_command=prepare_command(data_dir))
  return tfds_source.TfdsImageSource(source)


def prepare(data_dir: str) -> None:
  """Downloads and prepares `caltech_birds2011` as array_record files.

  Raises:
    ValueError: if TensorFlow or OpenCV, which tfds's CUB builder needs, are not installed.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  missing = [package for module, package in (("tensorflow", "tensorflow-cpu"),
                                             ("cv2", "opencv-python-headless"))
             if importlib.util.find_spec(module) is None]
  if missing:  # Checked first: the download is 1.2 GB.
    raise ValueError(f"preparing CUB with tfds needs {' and '.join(missing)} (for this step "
                     f"only): pip install {' '.join(missing)}")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(TFDS_NAME, data_dir=data_dir or None, file_format="array_record")
  builder.download_and_prepare()
