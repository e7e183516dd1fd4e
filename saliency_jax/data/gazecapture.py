"""GazeCapture (Krafka et al., CVPR 2016) read from its official directory layout.

The paper's gaze experiment (AlexNet at 227 px; iPad 5.44 -> 3.29 cm, iPhone 2.63 -> 2.03 cm
with the saliency sampler). Download from http://gazecapture.csail.mit.edu and extract both
levels of archives (`tar xf GazeCapture.tar; for f in *.tar.gz; do tar xzf "$f"; done`), so
that `data_dir` holds one folder per recording:

    data_dir/00002/frames/00000.jpg ...
    data_dir/00002/{appleFace,appleLeftEye,appleRightEye,faceGrid,dotInfo,frames,info}.json

A frame is used, as in iTracker, when Apple's detector found the face and both eyes. The record
is the face crop (Apple's face box, widened by one pixel as the iTracker tools do; parts outside
the frame are black) or, with `view="frame"`, the whole camera frame, in which the position of
the head is itself a cue, and the target is the gaze point `(XCam, YCam)` in centimetres
relative to the camera. The split (train / val / test) is the one in each recording's
`info.json`. Recordings whose metadata is missing or unreadable are skipped with a warning and a
count; frames that cannot be decoded are skipped by the loader when they are read.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re

import numpy as np

from saliency_jax.data import transforms

_LOG = logging.getLogger("saliency_jax.data")
SPLITS = ("train", "val", "test")
VIEWS = ("face", "frame")
_METADATA = ("appleFace", "appleLeftEye", "appleRightEye", "faceGrid", "dotInfo", "frames",
             "info")
_FRAME_NAME = re.compile(r"^(\d+)\.jpg$")
EXTRACT_HELP = ("Download GazeCapture from http://gazecapture.csail.mit.edu and extract it so "
                "that data.data_dir holds one folder per recording (00002/, 00003/, ...): "
                "tar xf GazeCapture.tar && for f in *.tar.gz; do tar xzf \"$f\"; done")


def _read_recording(folder: str) -> dict | None:
  metadata = {}
  for name in _METADATA:
    try:
      with open(os.path.join(folder, f"{name}.json"), "rb") as f:
        metadata[name] = json.load(f)
    except (OSError, ValueError):
      return None
  return metadata


@functools.lru_cache(maxsize=8)
def _index(root: str, split: str) -> dict[str, np.ndarray]:
  if not os.path.isdir(root):
    raise FileNotFoundError(f"gazecapture: data.data_dir {root!r} does not exist. {EXTRACT_HELP}")
  recordings = sorted(d for d in os.listdir(root)
                      if d.isdigit() and os.path.isdir(os.path.join(root, d)))
  if not recordings:
    archives = [f for f in os.listdir(root) if f.endswith((".tar.gz", ".tar"))]
    hint = f" Found {len(archives)} unextracted archives." if archives else ""
    raise FileNotFoundError(f"gazecapture: no recording folders in {root!r}.{hint} "
                            f"{EXTRACT_HELP}")
  rows = {"recording": [], "frame": [], "box": [], "target": [], "tablet": []}
  bad = []
  for recording in recordings:
    meta = _read_recording(os.path.join(root, recording))
    if meta is None:
      bad.append(recording)
      continue
    if meta["info"].get("Dataset") != split:
      continue
    try:
      valid = np.logical_and.reduce([np.asarray(meta[k]["IsValid"], bool) for k in
                                     ("appleFace", "appleLeftEye", "appleRightEye", "faceGrid")])
      face = np.stack([np.asarray(meta["appleFace"][k], np.float64) for k in "XYWH"], axis=1)
      target = np.stack([np.asarray(meta["dotInfo"][k], np.float32) for k in ("XCam", "YCam")],
                        axis=1)
      frames = [int(_FRAME_NAME.match(name).group(1)) for name in meta["frames"]]
    except (KeyError, TypeError, ValueError, AttributeError):
      bad.append(recording)
      continue
    if not len(valid) == len(face) == len(target) == len(frames):
      bad.append(recording)
      continue
    keep = np.flatnonzero(valid)
    # iTracker's tools truncate the box to integers and widen it by one pixel on each side.
    box = face[keep].astype(np.int64) + np.array([-1, -1, 1, 1])
    tablet = "ipad" in str(meta["info"].get("DeviceName", "")).lower()
    rows["recording"].append(np.full(len(keep), int(recording), np.int32))
    rows["frame"].append(np.asarray(frames, np.int32)[keep])
    rows["box"].append(box.astype(np.int32))
    rows["target"].append(target[keep])
    rows["tablet"].append(np.full(len(keep), tablet))
  if bad:
    _LOG.warning("gazecapture: skipped %d of %d recordings with missing or unreadable metadata "
                 "(e.g. %s).", len(bad), len(recordings), ", ".join(bad[:5]))
  if not rows["frame"]:
    raise FileNotFoundError(f"gazecapture: no usable frames of split {split!r} under {root!r} "
                            f"({len(bad)} recordings unreadable). {EXTRACT_HELP}")
  return {key: np.concatenate(value) for key, value in rows.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class GazeCaptureSource:
  """Random-access source of GazeCapture frames with their gaze targets.

  Attributes:
    root: the folder holding the recording folders.
    split: "train", "val" or "test".
    view: "face" (the face crop) or "frame" (the whole camera frame).
    index: the frame table built by `from_folder` (travels with the source to the workers).
  """

  root: str
  split: str
  view: str
  index: dict[str, np.ndarray]

  @classmethod
  def from_folder(cls, root: str, split: str, *, view: str = "face") -> GazeCaptureSource:
    """Indexes the recordings of `split` under `root`.

    Raises:
      ValueError: for an unknown split or view.
      FileNotFoundError: if the folder holds no usable recordings (with what to do).
    """
    if split not in SPLITS:
      raise ValueError(f"gazecapture split must be one of {SPLITS}; got {split!r}.")
    if view not in VIEWS:
      raise ValueError(f"gazecapture view must be one of {VIEWS}; got {view!r}.")
    root = os.path.abspath(os.path.expanduser(root))
    return cls(root=root, split=split, view=view, index=_index(root, split))

  def __len__(self) -> int:
    return len(self.index["frame"])

  def frame_path(self, index: int) -> str:
    return os.path.join(self.root, f"{self.index['recording'][index]:05d}", "frames",
                        f"{self.index['frame'][index]:05d}.jpg")

  def __getitem__(self, index: int) -> dict[str, object]:
    """`{"image": PIL RGB image, "label": float32 [2] (cm), "tablet": bool}`.

    Raises:
      transforms.BadImageError: if the frame cannot be read.
    """
    image = transforms.load_rgb(transforms.open_image(self.frame_path(index)))
    if self.view == "face":
      x, y, w, h = (int(v) for v in self.index["box"][index])
      if w <= 0 or h <= 0:
        raise transforms.BadImageError(f"empty face box {w}x{h} in {self.frame_path(index)}.")
      image = image.crop((x, y, x + w, y + h))  # Zero-filled outside the frame.
    return {"image": image, "label": self.index["target"][index].copy(),
            "tablet": bool(self.index["tablet"][index])}
