r"""Prepares a dataset for `make_loader`, once per dataset.

    python -m saliency_jax.data.prepare --dataset=cub --data_dir=DIR
    python -m saliency_jax.data.prepare --dataset=inaturalist2017 --data_dir=DIR \
        --manual_dir=MANUAL_DIR
    python -m saliency_jax.data.prepare --dataset=cityscapes --data_dir=DIR --manual_dir=MANUAL_DIR
    python -m saliency_jax.data.prepare --dataset=voc2012 --data_dir=DIR --manual_dir=MANUAL_DIR
    python -m saliency_jax.data.prepare --dataset=image_folder --data_dir=FOLDER
    python -m saliency_jax.data.prepare --dataset=gazecapture --data_dir=FOLDER
    python -m saliency_jax.data.prepare --dataset=synthetic

CUB, iNaturalist, Cityscapes and VOC 2012 are written as tfds array_record files under
`--data_dir` (CUB is downloaded by tfds and needs `pip install tensorflow-cpu
opencv-python-headless` for this step only; the others read the official files from
`--manual_dir`, archives or extracted, see `saliency_jax/data/inaturalist.py`, `cityscapes.py`,
`voc.py`; a missing file, a truncated archive or an incomplete extraction stops them before
anything is written). Image folders, GazeCapture and the synthetic task need no
preparation: for them this command checks the data and prints what the loader will see, which is
worth doing before a long run.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from saliency_jax.data.config import DATASETS

_DATASET = flags.DEFINE_enum("dataset", None, list(DATASETS), "Dataset to prepare or check.",
                             required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data directory, or the dataset folder.")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", "", "Folder of the manually downloaded files "
                                  "(inaturalist2017, cityscapes, voc2012).")


def main(argv: list[str]) -> None:
  del argv
  from saliency_jax import data  # pylint: disable=g-import-not-at-top
  name = _DATASET.value
  try:
    if name == "cub":
      from saliency_jax.data import cub  # pylint: disable=g-import-not-at-top
      cub.prepare(_DATA_DIR.value)
    elif name == "inaturalist2017":
      from saliency_jax.data import inaturalist  # pylint: disable=g-import-not-at-top
      inaturalist.prepare(_DATA_DIR.value, _MANUAL_DIR.value)
    elif name == "cityscapes":
      from saliency_jax.data import cityscapes  # pylint: disable=g-import-not-at-top
      cityscapes.prepare(_DATA_DIR.value, _MANUAL_DIR.value)
    elif name == "voc2012":
      from saliency_jax.data import voc  # pylint: disable=g-import-not-at-top
      voc.prepare(_DATA_DIR.value, _MANUAL_DIR.value)
    info = data.dataset_info({"name": name, "data_dir": _DATA_DIR.value})
  except (FileNotFoundError, ValueError) as error:
    # The messages say what to do; a traceback would only bury them.
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)
  print(f"{name}: {info}")


if __name__ == "__main__":
  app.run(main)
