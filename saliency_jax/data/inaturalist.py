"""iNaturalist 2017 from the official archives, through a tfds builder of this project.

The tfds catalogue's `i_naturalist2017` downloads from a URL that no longer answers, so this
builder reads the official files from a manual download directory instead. 5,089 classes,
579,184 training and 95,986 validation images, longest side at most 800 px (the paper's
iNaturalist experiment: top-1 60 -> 65 with the saliency sampler).

Put into the manual directory (links on https://github.com/visipedia/inat_comp/tree/master/2017):
- `train_val_images.tar.gz` (186 GB, md5 7c784ea5e424efaec655bd392f87301f), or the folder
  `train_val_images/` it extracts to (`tar xzf train_val_images.tar.gz`, faster to prepare:
  the archive is read in one sequential pass per split);
- `train_val2017.zip` (26 MB), or the `train2017.json` and `val2017.json` it holds.

Then, once (no TensorFlow needed):

    python -m saliency_jax.data.prepare --dataset=inaturalist2017 --data_dir=DIR \
        --manual_dir=MANUAL_DIR

A missing file, an archive of the wrong size (an interrupted download) or an extracted folder
lacking listed images stops the preparation before it writes anything, with the fix in the
message. Labels are the `category_id`s of the annotation files (0..5088).
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import zipfile

import tensorflow_datasets as tfds

from saliency_jax.data import tfds_source

_LOG = logging.getLogger("saliency_jax.data")
TFDS_NAME = "inaturalist2017_manual"
NUM_CLASSES = 5089
SPLITS = {"train": "train", "eval": "validation"}
IMAGES_ARCHIVE = "train_val_images.tar.gz"
IMAGES_FOLDER = "train_val_images"
ANNOTATIONS_ARCHIVE = "train_val2017.zip"
ANNOTATION_FILES = {"train": "train2017.json", "validation": "val2017.json"}
# Sizes of the official files in bytes; a smaller file is an interrupted download.
OFFICIAL_SIZES = {IMAGES_ARCHIVE: 198_765_436_676, ANNOTATIONS_ARCHIVE: 26_836_398}
HOMEPAGE = "https://github.com/visipedia/inat_comp/tree/master/2017"

INSTRUCTIONS = f"""\
Download from {HOMEPAGE} into the manual directory:
  {IMAGES_ARCHIVE} (186 GB; or extract it there to {IMAGES_FOLDER}/)
  {ANNOTATIONS_ARCHIVE} (26 MB; or extract it there to {' and '.join(ANNOTATION_FILES.values())})
then run:
  python -m saliency_jax.data.prepare --dataset=inaturalist2017 --data_dir=DIR \\
      --manual_dir=MANUAL_DIR"""


def prepare_command(data_dir: str, manual_dir: str = "") -> str:
  return (f"python -m saliency_jax.data.prepare --dataset=inaturalist2017 "
          f"--data_dir={data_dir or 'DIR'} --manual_dir={manual_dir or 'MANUAL_DIR'}")


class ManualDirError(FileNotFoundError):
  """The manual download directory lacks files, or holds incomplete ones."""


def _check_size(path: str) -> None:
  expected = OFFICIAL_SIZES.get(os.path.basename(path))
  size = os.path.getsize(path)
  if expected is not None and size != expected:
    raise ManualDirError(
        f"{path} has {size:,} bytes, the official file {expected:,}: the download is "
        f"incomplete or not the official file. Download it again.\n{INSTRUCTIONS}")


def locate_manual_files(manual_dir: str) -> dict[str, str]:
  """Finds the images and annotations in `manual_dir` and checks that they are complete.

  Returns:
    `{"images": archive path or folder, "train": json path or "zip:member",
    "validation": ...}`; an annotation inside the zip is `"<zip path>::<member>"`.

  Raises:
    ManualDirError: naming what is missing or incomplete and what to download.
  """
  if not manual_dir or not os.path.isdir(manual_dir):
    raise ManualDirError(f"iNaturalist 2017: manual directory {manual_dir!r} does not exist.\n"
                         f"{INSTRUCTIONS}")
  found: dict[str, str] = {}
  folder = os.path.join(manual_dir, IMAGES_FOLDER)
  archive = os.path.join(manual_dir, IMAGES_ARCHIVE)
  if os.path.isdir(folder):
    found["images"] = folder
  elif os.path.isfile(archive):
    _check_size(archive)
    found["images"] = archive
  zip_path = os.path.join(manual_dir, ANNOTATIONS_ARCHIVE)
  for split, name in ANNOTATION_FILES.items():
    if os.path.isfile(os.path.join(manual_dir, name)):
      found[split] = os.path.join(manual_dir, name)
  if not {"train", "validation"} <= set(found) and os.path.isfile(zip_path):
    _check_size(zip_path)
    try:
      with zipfile.ZipFile(zip_path) as archive_file:
        members = {os.path.basename(m): m for m in archive_file.namelist()}
    except zipfile.BadZipFile as error:
      raise ManualDirError(f"{zip_path} is not a readable zip ({error}); download it "
                           f"again.\n{INSTRUCTIONS}") from error
    for split, name in ANNOTATION_FILES.items():
      if split not in found and name in members:
        found[split] = f"{zip_path}::{members[name]}"
  missing = [what for what in ("images", "train", "validation") if what not in found]
  if missing:
    raise ManualDirError(f"iNaturalist 2017: {manual_dir} lacks the {', '.join(missing)} "
                         f"file(s).\n{INSTRUCTIONS}")
  return found


def _read_annotations(location: str) -> dict:
  if "::" in location:
    zip_path, member = location.split("::", 1)
    with zipfile.ZipFile(zip_path) as archive_file, archive_file.open(member) as f:
      return json.load(f)
  with open(location, "rb") as f:
    return json.load(f)


def annotations_by_file(location: str) -> dict[str, tuple[int, str]]:
  """`{image file name: (category_id, relative path)}` from a COCO-style annotation file.

  Images are matched by file name: the names are content hashes, unique across the dataset.
  """
  data = _read_annotations(location)
  paths = {image["id"]: image["file_name"] for image in data["images"]}
  return {os.path.basename(paths[a["image_id"]]): (int(a["category_id"]), paths[a["image_id"]])
          for a in data["annotations"]}


class Inaturalist2017Manual(tfds.core.GeneratorBasedBuilder):
  """iNaturalist 2017 (train, validation) from manually downloaded official files."""

  name = TFDS_NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Train and validation splits from the official 2017 files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="iNaturalist 2017 species classification (train and validation).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "image/filename": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage=HOMEPAGE,
    )

  def _split_generators(self, dl_manager):
    found = locate_manual_files(os.fspath(dl_manager.manual_dir))
    generators = {}
    for split in ANNOTATION_FILES:
      wanted = annotations_by_file(found[split])
      if os.path.isdir(found["images"]):
        _check_extracted(found["images"], wanted)
      generators[split] = self._generate_examples(images=found["images"], wanted=wanted)
    return generators

  def _generate_examples(self, *, images: str, wanted: dict[str, tuple[int, str]]):
    if os.path.isdir(images):  # Extracted folder: read exactly the listed files.
      for name, (label, relative) in wanted.items():
        yield name, {"image": _extracted_path(images, relative), "label": label,
                     "image/filename": relative}
      return
    seen = 0
    # One sequential pass over the archive with Python's tarfile (tfds's own archive reader
    # needs TensorFlow).
    with tarfile.open(images, mode="r|gz") as archive:
      for member in archive:
        name = os.path.basename(member.name)
        if member.isfile() and name in wanted:
          seen += 1
          label, relative = wanted[name]
          yield name, {"image": archive.extractfile(member).read(), "label": label,
                       "image/filename": relative}
    if seen < len(wanted):
      _LOG.warning("iNaturalist 2017: %d of %d annotated images were not in the archive.",
                   len(wanted) - seen, len(wanted))


def _extracted_path(folder: str, relative: str) -> str:
  # file_name starts with "train_val_images/", the folder's own name.
  parts = relative.split("/")
  if parts and parts[0] == os.path.basename(folder.rstrip("/")):
    parts = parts[1:]
  return os.path.join(folder, *parts)


def _check_extracted(folder: str, wanted: dict[str, tuple[int, str]]) -> None:
  missing = [relative for _, relative in wanted.values()
             if not os.path.isfile(_extracted_path(folder, relative))]
  if missing:
    raise ManualDirError(
        f"{folder} lacks {len(missing)} of the {len(wanted)} annotated images (for example "
        f"{missing[0]}): the extraction is incomplete. Extract {IMAGES_ARCHIVE} again, or "
        f"remove the folder and leave the archive in the manual directory.")


def prepare(data_dir: str, manual_dir: str) -> None:
  """Builds the array_record files from the manual directory (no TensorFlow needed)."""
  data_dir = data_dir or os.path.expanduser(os.path.join("~", "tensorflow_datasets"))
  manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual")
  locate_manual_files(manual_dir)  # Fail with the fix before tfds creates anything.
  builder = Inaturalist2017Manual(data_dir=data_dir, file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=config)


def inaturalist_source(split: str, *, data_dir: str) -> tfds_source.TfdsImageSource:
  """The records of a prepared split ("train" or "validation").

  Raises:
    FileNotFoundError: if the dataset has not been prepared (the message gives the command).
  """
  source = tfds_source.open_tfds_source(TFDS_NAME, split=split, data_dir=data_dir,
                                        prepare_command=prepare_command(data_dir))
  return tfds_source.TfdsImageSource(source)
