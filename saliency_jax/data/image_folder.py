"""A folder of the user's images: one sub-folder per class, one folder per split.

Layout (the torchvision `ImageFolder` convention, with splits side by side):

    root/train/<class name>/<any sub-folders>/<image files>
    root/val/<class name>/...

Class indices are the sorted class-folder names of the training split, so that every split
labels a class the same way. A class folder without images is kept (its index stays reserved)
with a warning; an evaluation class that the training split lacks, a missing split folder or a
split without a single image stop the run before it starts, with a message saying what to fix.
Files whose suffix is not an image format are ignored; image files that turn out to be corrupt
are skipped by the loader, with a warning and a count, when they are read.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os

import numpy as np

_LOG = logging.getLogger("saliency_jax.data")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm")


def _list_images(folder: str) -> list[str]:
  found = []
  for parent, dirs, files in os.walk(folder, followlinks=True):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    found.extend(os.path.join(parent, f) for f in sorted(files)
                 if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES))
  return sorted(found)


@functools.lru_cache(maxsize=16)
def class_names(root: str) -> tuple[str, ...]:
  """Sorted class-folder names of `root/train`.

  Raises:
    FileNotFoundError: if `root/train` is missing or has no class folders.
  """
  train = os.path.join(root, "train")
  if not os.path.isdir(train):
    raise FileNotFoundError(
        f"image_folder: no folder {train!r}. Set data.data_dir to a folder holding train/ and "
        f"val/, each with one sub-folder of images per class.")
  names = tuple(sorted(d for d in os.listdir(train)
                       if os.path.isdir(os.path.join(train, d)) and not d.startswith(".")))
  if not names:
    raise FileNotFoundError(f"image_folder: {train!r} has no class sub-folders; put the images "
                            f"of each class in train/<class name>/.")
  return names


@functools.lru_cache(maxsize=16)
def _index(root: str, split: str) -> tuple[tuple[str, ...], np.ndarray]:
  names = class_names(root)
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise FileNotFoundError(
        f"image_folder: no folder {folder!r} for split {split!r}; expected {root}/{split}/<class "
        f"name>/ (set data.eval_split to the name of your evaluation folder).")
  present = sorted(d for d in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
  unknown = sorted(set(present) - set(names))
  if unknown:
    raise FileNotFoundError(
        f"image_folder: class folder(s) {unknown} in {folder!r} do not exist in the training "
        f"split; every class needs a folder in {root}/train/ so that labels agree.")
  paths, labels, empty = [], [], []
  for label, name in enumerate(names):
    files = _list_images(os.path.join(folder, name)) if name in present else []
    if not files:
      empty.append(name)
    paths.extend(files)
    labels.extend([label] * len(files))
  if empty:
    _LOG.warning("image_folder: %d of %d classes have no images in %s: %s", len(empty),
                 len(names), folder, ", ".join(empty[:10]) + (" ..." if len(empty) > 10 else ""))
  if not paths:
    raise FileNotFoundError(f"image_folder: no image files ({', '.join(IMAGE_SUFFIXES)}) under "
                            f"{folder!r}.")
  return tuple(paths), np.asarray(labels, np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageFolderSource:
  """Random-access source over `root/<split>/<class>/...`; records hold the file path.

  The file listing is made once, in the process that builds the loader, and travels with the
  source to the workers: every worker reads the same list, even if the folder changes.

  Attributes:
    root: the folder holding the split folders.
    split: a split folder name ("train", "val", ...).
    paths: the image files, in label order then path order.
    labels: int32 `[len(paths)]`.
    class_names: the class-folder names; label `k` is `class_names[k]`.
  """

  root: str
  split: str
  paths: tuple[str, ...]
  labels: np.ndarray
  class_names: tuple[str, ...]

  @classmethod
  def from_folder(cls, root: str, split: str) -> ImageFolderSource:
    """Lists `root/split`.

    Raises:
      FileNotFoundError: see the module docstring.
    """
    root = os.path.abspath(os.path.expanduser(root))
    paths, labels = _index(root, split)
    return cls(root=root, split=split, paths=paths, labels=labels, class_names=class_names(root))

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, object]:
    """`{"image": path, "label": int}`; the loader decodes the file."""
    return {"image": self.paths[index], "label": int(self.labels[index])}
