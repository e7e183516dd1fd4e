"""Image decoding and the authors' augmentations, on the host, in NumPy and PIL.

Everything here runs inside the input workers, so it imports neither JAX nor TensorFlow.
Images leave this module as uint8 `[S, S, 3]` RGB arrays (height, width, channel); the real dense
datasets' masks and boxes go through `dense_transform` with their image.

Decoding is forgiving where a conversion is well defined and strict where it is not: grayscale,
palette, RGBA/LA (composited on white), CMYK and 16-bit images are converted to 8-bit RGB; files
that PIL cannot open or that are truncated raise `BadImageError`, which the loader turns into a
skipped example with a warning and a count instead of a crash in the middle of an epoch.

The augmentations follow torchvision, which the authors used: `RandomResizedCrop` (area fraction
in [0.08, 1], aspect ratio in [3/4, 4/3], ten attempts, then a centre crop of clamped aspect)
resized bilinearly to the high-resolution side, a horizontal flip with probability 1/2; and for
evaluation `Resize(eval_resize)` of the shorter side then `CenterCrop(size)`. Crops and resizes
are one PIL call (`Image.resize(box=...)`), and JPEGs larger than needed are decoded at a reduced
DCT scale (`Image.draft`), which makes large photographs several times cheaper to read.
"""

from __future__ import annotations

import io
import math
import os
import struct

import numpy as np
from PIL import Image

from saliency_jax.data import dense_records

# Shorter than this many pixels on a side is not an image but a corrupt header.
_MIN_SIDE = 1
# What PIL raises on malformed files, depending on the format and where the damage is.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
                  ZeroDivisionError, struct.error, Image.DecompressionBombError)


class BadImageError(ValueError):
  """An image that cannot be decoded (corrupt, truncated, unsupported, missing file)."""


def _flatten_alpha(image: Image.Image) -> Image.Image:
  # Transparent pixels carry arbitrary colours; compositing on white is what viewers show.
  rgba = image.convert("RGBA")
  background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
  return Image.alpha_composite(background, rgba).convert("RGB")


def _wide_to_uint8(array: np.ndarray) -> np.ndarray:
  """16/32-bit integer or float samples -> uint8, keeping the full range visible."""
  if array.dtype == np.uint8:
    return array
  if np.issubdtype(array.dtype, np.floating):
    finite = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(finite.max()) if finite.size else 0.0
    # Float images are either in [0, 1] or already in [0, 255].
    scale = 255.0 if peak <= 1.0 else 1.0
    return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
  if np.issubdtype(array.dtype, np.bool_):
    return array.astype(np.uint8) * 255
  # Integer samples wider than 8 bits are 16-bit data in practice (PNG, TIFF): keep the top byte.
  return (np.clip(array.astype(np.int64), 0, 65535) >> 8).astype(np.uint8)


def _pil_to_rgb(image: Image.Image) -> Image.Image:
  """Any PIL mode -> "RGB"."""
  mode = image.mode
  if mode == "RGB":
    return image
  if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
      mode == "P" and "transparency" in image.info):
    return _flatten_alpha(image)
  if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
    gray = _wide_to_uint8(np.asarray(image))
    return Image.fromarray(gray, "L").convert("RGB")
  # L, 1, P, CMYK, YCbCr, LAB, HSV: PIL's own conversions are well defined.
  return image.convert("RGB")


def array_to_rgb(array: np.ndarray) -> np.ndarray:
  """Converts an already decoded image array to uint8 RGB.

  Args:
    array: `[H, W]`, `[H, W, 1]`, `[H, W, 3]` or `[H, W, 4]`; uint8, wider integers (read as
      16-bit), bool, or float (in [0, 1] or [0, 255]).

  Returns:
    uint8 `[H, W, 3]`.

  Raises:
    BadImageError: for other shapes or an empty image.
  """
  array = np.asarray(array)
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or min(array.shape[:2]) < _MIN_SIDE:
    raise BadImageError(f"expected an image of shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; "
                        f"got shape {array.shape}.")
  array = _wide_to_uint8(array)
  if array.shape[-1] == 1:
    return np.repeat(array, 3, axis=-1)
  if array.shape[-1] == 4:
    return np.asarray(_flatten_alpha(Image.fromarray(array, "RGBA")))
  return np.ascontiguousarray(array)


def open_image(data: bytes | str | os.PathLike | np.ndarray | Image.Image) -> Image.Image:
  """Opens an image lazily (header only) so that a reduced decode can still be chosen.

  Args:
    data: encoded bytes, a file path, a decoded array (see `array_to_rgb`) or a PIL image.

  Returns:
    A PIL image (not yet decoded when `data` is encoded).

  Raises:
    BadImageError: if the data is not an image PIL can identify, or the file cannot be read.
  """
  if isinstance(data, Image.Image):
    return data
  if isinstance(data, np.ndarray):
    return Image.fromarray(array_to_rgb(data), "RGB")
  try:
    if isinstance(data, (bytes, bytearray, memoryview)):
      image = Image.open(io.BytesIO(bytes(data)))
    else:
      image = Image.open(os.fspath(data))
  except _DECODE_ERRORS as error:
    raise BadImageError(f"cannot open image: {error}") from error
  if min(image.size) < _MIN_SIDE:
    raise BadImageError(f"image has an empty side: size {image.size}.")
  return image


def load_rgb(image: Image.Image, *, min_size: tuple[int, int] | None = None) -> Image.Image:
  """Decodes a lazily opened image to "RGB", at a reduced JPEG scale if `min_size` allows.

  Args:
    image: from `open_image`.
    min_size: `(width, height)` the decoded image must at least have; JPEGs are decoded at the
      smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least this large. None: full.

  Returns:
    A decoded "RGB" PIL image.

  Raises:
    BadImageError: if decoding fails (corrupt or truncated data).
  """
  try:
    if min_size is not None and image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
      image.draft(image.mode, (max(1, int(min_size[0])), max(1, int(min_size[1]))))
    image.load()
    return _pil_to_rgb(image)
  except _DECODE_ERRORS as error:
    raise BadImageError(f"cannot decode image: {error}") from error


def decode_image(data: bytes | str | os.PathLike | np.ndarray | Image.Image) -> np.ndarray:
  """Decodes any supported image to uint8 RGB `[H, W, 3]` at full resolution.

  Raises:
    BadImageError: see `open_image` and `load_rgb`.
  """
  return np.asarray(load_rgb(open_image(data)))


def random_crop_box(width: int, height: int, rng: np.random.Generator, *,
                    scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3),
                    attempts: int = 10) -> tuple[int, int, int, int]:
  """A random-resized-crop box, by torchvision's `RandomResizedCrop.get_params` algorithm.

  Up to `attempts` times: draw an area fraction uniformly in `scale` and a log-uniform aspect
  ratio in `ratio`, round to integer sides and accept if the box fits. Otherwise a centre crop
  whose aspect ratio is the image's clamped to `ratio`.

  Args:
    width, height: image size in pixels.
    rng: the example's generator.
    scale, ratio, attempts: as torchvision.

  Returns:
    `(left, top, crop_width, crop_height)` in whole pixels, inside the image.
  """
  area = width * height
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(attempts):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, w, h
  in_ratio = width / height
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def center_crop_box(width: int, height: int, *, resize: int,
                    size: int) -> tuple[float, float, float, float]:
  """The source box of torchvision's `Resize(resize)` then `CenterCrop(size)`.

  `Resize` scales the shorter side to `resize` (the longer to `int(resize * long / short)`);
  `CenterCrop` then takes rows `round((h - size) / 2)` onwards (columns likewise). The box is
  that crop mapped back to original pixel coordinates, so one resampling does both steps.

  Returns:
    `(left, top, right, bottom)` in original pixel coordinates (floats).
  """
  if size > resize:
    raise ValueError(f"size must be <= resize (a centre crop of the resized image); got "
                     f"size={size}, resize={resize}.")
  if width <= height:
    new_w, new_h = resize, int(resize * height / width)
  else:
    new_w, new_h = int(resize * width / height), resize
  top = int(round((new_h - size) / 2.0))
  left = int(round((new_w - size) / 2.0))
  sx, sy = width / new_w, height / new_h
  return left * sx, top * sy, (left + size) * sx, (top + size) * sy


def _resize_box(image: Image.Image, box: tuple[float, float, float, float], size: int, *,
                full_size: tuple[int, int]) -> Image.Image:
  """Resamples `box` (in `full_size` coordinates) of a possibly draft-reduced image to size^2."""
  fx = image.size[0] / full_size[0]
  fy = image.size[1] / full_size[1]
  scaled = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
  return image.resize((size, size), Image.Resampling.BILINEAR, box=scaled)


def train_transform(data, rng: np.random.Generator, *, size: int,
                    scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3),
                    flip: bool = True) -> np.ndarray:
  """Random-resized crop to `size x size` and a random horizontal flip.

  Args:
    data: anything `open_image` takes.
    rng: the example's generator (the crop and the flip are drawn from it, in that order).
    size: output side in pixels.
    scale, ratio: of the random-resized crop (torchvision's defaults).
    flip: whether to flip horizontally with probability 1/2.

  Returns:
    uint8 `[size, size, 3]`.

  Raises:
    BadImageError: if the image cannot be decoded.
  """
  image = open_image(data)
  width, height = image.size
  left, top, w, h = random_crop_box(width, height, rng, scale=scale, ratio=ratio)
  # The crop must keep at least `size` pixels per side after a reduced JPEG decode.
  shrink = max(1.0, min(w, h) / size)
  decoded = load_rgb(image, min_size=(width / shrink, height / shrink))
  out = _resize_box(decoded, (left, top, left + w, top + h), size, full_size=(width, height))
  if flip and rng.random() < 0.5:
    out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  return np.asarray(out)


def eval_transform(data, *, size: int, resize: int) -> np.ndarray:
  """Resize of the shorter side to `resize`, then a centre crop to `size x size`.

  Args:
    data: anything `open_image` takes.
    size: output side in pixels.
    resize: shorter side before the crop (>= size).

  Returns:
    uint8 `[size, size, 3]`.

  Raises:
    BadImageError: if the image cannot be decoded.
  """
  image = open_image(data)
  width, height = image.size
  box = center_crop_box(width, height, resize=resize, size=size)
  shrink = max(1.0, min(width, height) / resize)
  decoded = load_rgb(image, min_size=(width / shrink, height / shrink))
  return np.asarray(_resize_box(decoded, box, size, full_size=(width, height)))


def resize_transform(data, *, size: int) -> np.ndarray:
  """Plain resize of the whole image to `size x size` (no crop, aspect not kept).

  For inputs that are framed already (synthetic images, face crops), where any crop could cut
  the detail that carries the label.

  Returns:
    uint8 `[size, size, 3]`.

  Raises:
    BadImageError: if the image cannot be decoded.
  """
  if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (size, size, 3):
    return data
  image = open_image(data)
  width, height = image.size
  shrink = max(1.0, min(width, height) / size)
  decoded = load_rgb(image, min_size=(width / shrink, height / shrink))
  if decoded.size == (size, size):
    return np.asarray(decoded)
  return np.asarray(_resize_box(decoded, (0, 0, width, height), size, full_size=(width, height)))


def decode_mask(data: bytes | str | os.PathLike | np.ndarray) -> np.ndarray:
  """Decodes a one-channel class mask (grayscale or palette indices) to uint8 `[H, W]`.

  Palette PNGs (VOC's SegmentationClass) give their indices, not their colours.

  Raises:
    BadImageError: if the data is not a one-channel 8-bit image.
  """
  if isinstance(data, np.ndarray):
    mask = data[..., 0] if data.ndim == 3 and data.shape[-1] == 1 else data
  else:
    image = open_image(data)
    try:
      image.load()
    except _DECODE_ERRORS as error:
      raise BadImageError(f"cannot decode mask: {error}") from error
    if image.mode not in ("L", "P"):
      raise BadImageError(f"expected a one-channel mask (mode L or P), got mode {image.mode}.")
    mask = np.asarray(image)
  if mask.ndim != 2 or mask.dtype != np.uint8:
    raise BadImageError(f"expected a uint8 mask [H, W], got {mask.dtype} {mask.shape}.")
  return mask


def nearest_rows(source: int, size: int) -> np.ndarray:
  """The source row (or column) each of `size` output rows reads in a nearest-neighbour resize:
  the one holding the output pixel's centre, `floor((i + 0.5) * source / size)`."""
  return np.minimum(((np.arange(size) + 0.5) * source / size).astype(np.int64), source - 1)


def dense_transform(record: dict, *, size: int, rng: np.random.Generator | None = None,
                    flip: bool = False) -> dict[str, np.ndarray]:
  """A raw dense record (see `dense_records`) resized to `size x size`, flipped in training.

  The whole image is resized (bilinear, the aspect ratio is not kept: a 2:1 Cityscapes frame
  is squeezed horizontally by 2), the mask by nearest neighbour (`nearest_rows`, void pixels
  `dense_records.VOID` kept), the boxes scaled by the same factors and clipped
  to the image; `small` marks the boxes under `dense_records.SMALL_AREA` pixels after scaling.
  With `flip` and a generator, one draw `rng.random() < 0.5` flips image, mask and boxes.

  Args:
    record: `{"image", "mask", "boxes", "labels"}`: the image and mask as `open_image` and
      `decode_mask` take them, of the same size; boxes in that image's pixel edges.
    size: the delivered side.
    rng: the example's generator in training; None in evaluation (never flipped).
    flip: whether training flips horizontally with probability 1/2.

  Returns:
    `{"image": uint8 [size, size, 3], "mask": uint8 [size, size], "boxes": float32 [M, 4],
    "labels": int32 [M], "small": bool [M]}`, padding rows (label -1) zero and not small.

  Raises:
    BadImageError: if the image or the mask cannot be decoded, or their sizes differ.
  """
  image = open_image(record["image"])
  width, height = image.size
  mask = decode_mask(record["mask"])
  if mask.shape != (height, width):
    raise BadImageError(f"expected a mask of the image's size {height}x{width}, got "
                        f"{mask.shape[0]}x{mask.shape[1]}.")
  shrink = max(1.0, min(width, height) / size)
  decoded = load_rgb(image, min_size=(width / shrink, height / shrink))
  if decoded.size == (size, size):
    out = np.asarray(decoded)
  else:
    out = np.asarray(_resize_box(decoded, (0, 0, width, height), size,
                                 full_size=(width, height)))
  mask = mask[nearest_rows(height, size)[:, None], nearest_rows(width, size)[None, :]]
  mask = mask.astype(np.uint8)
  labels = np.asarray(record["labels"]).astype(np.int32).reshape(-1)
  valid = labels >= 0
  scale = np.array([size / width, size / height] * 2, np.float32)
  boxes = np.clip(np.asarray(record["boxes"], np.float32).reshape(-1, 4) * scale, 0, size)
  boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
  boxes[~valid] = 0.0
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  small = valid & (area < dense_records.SMALL_AREA)
  if flip and rng is not None and rng.random() < 0.5:
    out, mask = out[:, ::-1], mask[:, ::-1]
    boxes = np.where(valid[:, None], np.stack(
        [size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=1), 0.0)
  return {"image": np.ascontiguousarray(out), "mask": np.ascontiguousarray(mask),
          "boxes": boxes.astype(np.float32), "labels": labels, "small": small}
