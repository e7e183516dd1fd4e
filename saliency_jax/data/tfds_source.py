"""Reading prepared tfds datasets (array_record files) without TensorFlow.

`tfds.data_source` gives random access to the records of a dataset prepared in the array_record
format; with image features left undecoded (`tfds.decode.SkipDecoding`) it needs neither
TensorFlow nor OpenCV, and the image bytes reach our own decoder, which converts odd formats and
turns corrupt files into skipped examples instead of exceptions deep inside tfds.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def _image_feature_names(builder) -> list[str]:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder.info.features
  return [name for name, feature in features.items()
          if isinstance(feature, tfds.features.Image)]


def open_tfds_source(name: str, *, split: str, data_dir: str, prepare_command: str):
  """Opens `split` of a prepared tfds dataset for random access, image features as bytes.

  Args:
    name: the tfds dataset name (registered builder).
    split: a tfds split name.
    data_dir: the tfds data directory ("" for tfds's default).
    prepare_command: the command that prepares this dataset, quoted in errors.

  Returns:
    A tfds data source (`len`, `[index]` -> dict of features), picklable for grain workers.

  Raises:
    FileNotFoundError: if the dataset or the split has not been prepared as array_record files.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    decoders = {key: tfds.decode.SkipDecoding() for key in _image_feature_names(builder)}
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            decoders=decoders)
  except Exception as error:  # tfds raises AssertionError, NotImplementedError, KeyError...
    raise FileNotFoundError(
        f"{name}: split {split!r} is not available as array_record files under data_dir="
        f"{data_dir or '(tfds default)'} ({type(error).__name__}: {error}). Prepare it once "
        f"with:\n  {prepare_command}") from error


@dataclasses.dataclass(frozen=True, eq=False)
class TfdsImageSource:
  """Maps tfds records to the loader's `{"image": bytes, "label": int}` records.

  Attributes:
    source: a tfds data source (see `open_tfds_source`).
    image_key: the image feature.
    label_key: the integer class-label feature.
  """

  source: Any
  image_key: str = "image"
  label_key: str = "label"

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self.source[int(index)]
    return {"image": record[self.image_key], "label": int(record[self.label_key])}
