"""Pictures of what the sampler does, in the style of the paper's Fig. 4.

One panel per example, four tiles side by side: the input image, the saliency map, the sampling
grid drawn over the input, and the sampled image the task network sees. Models without a
saliency map or grid (the uniform baseline) get the tiles they have. Dense models add tiles of
their prediction (`extra_tiles`): brought into the warped frame, in the source frame, and the
target (`label_colors`, `dense_tiles`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageDraw

from saliency_jax.train import dense_metrics

# Anchor colours of a perceptually ordered dark-to-bright map (close to matplotlib's inferno),
# so that the saliency needs no matplotlib.
_COLORMAP = np.array([
    [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
    [250, 193, 39], [252, 255, 164]], np.float64)
_GRID_COLOR = (0, 255, 128)
# Background black, then one distinct colour per class (cycled past eight).
_CLASS_COLORS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200],
                          [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                          [210, 245, 60]], np.uint8)
_VOID_COLOR = (128, 128, 128)
_BOX_COLORS = {"target": (0, 255, 0), "detected": (255, 0, 0)}
_TITLE_HEIGHT = 16


def colorize(values: np.ndarray) -> np.ndarray:
  """Maps `[h, w]` values to `[h, w, 3]` uint8 colours, the maximum to the brightest colour.

  The map is scaled by its maximum (not min-max) so that a uniform saliency shows as one flat
  colour rather than noise.
  """
  values = np.asarray(values, np.float64)
  peak = values.max()
  scaled = values / peak if peak > 0 else np.zeros_like(values)
  position = np.clip(scaled, 0.0, 1.0) * (len(_COLORMAP) - 1)
  low = np.floor(position).astype(int)
  high = np.minimum(low + 1, len(_COLORMAP) - 1)
  weight = (position - low)[..., None]
  return np.round(_COLORMAP[low] * (1 - weight) + _COLORMAP[high] * weight).astype(np.uint8)


def _to_uint8(image: np.ndarray) -> np.ndarray:
  """uint8 stays; float is in 0..1, the models' convention for `extras["sampled"]`."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  return np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, size: int, resample: int) -> Image.Image:
  return Image.fromarray(_to_uint8(image)).resize((size, size), resample=resample)


def grid_to_pixels(grid: np.ndarray, size: int, *, align_corners: bool) -> np.ndarray:
  """Grid coordinates in [-1, 1] to pixel coordinates of a `size` x `size` picture.

  Args:
    grid: `[..., 2]`, (x, y) in the `grid_sample` convention.
    size: the picture's side in pixels.
    align_corners: the convention the grid was sampled with: -1 is the centre of the first
      pixel (True) or its outer edge (False).

  Returns:
    `[..., 2]` float64 (column, row) positions, pixel centres at integers.
  """
  grid = np.asarray(grid, np.float64)
  if align_corners:
    return (grid + 1.0) / 2.0 * (size - 1)
  return ((grid + 1.0) * size - 1.0) / 2.0


def make_panel(image: np.ndarray, sampled: np.ndarray, *, saliency: np.ndarray | None = None,
               grid: np.ndarray | None = None, align_corners: bool = True, tile: int = 224,
               grid_lines: int = 16, caption: str = "",
               extra_tiles: tuple[tuple[str, np.ndarray], ...] = ()) -> np.ndarray:
  """One Fig. 4 style panel.

  Args:
    image: `[H, W, 3]` uint8 input (the high-resolution image).
    sampled: `[t, t, 3]` sampled image, uint8, or float in [0, 1].
    saliency: `[gh, gw]` saliency map, or None.
    grid: `[t, t, 2]` sampling grid (x, y) in [-1, 1], or None.
    align_corners: the grid's convention (see `grid_to_pixels`).
    tile: side of each tile in pixels.
    grid_lines: how many grid rows and columns to draw.
    caption: text under the tiles (e.g. the label and the prediction).
    extra_tiles: `(title, [h, w, 3] uint8)` pictures appended after the sampled image.

  Returns:
    `[tile + titles, n_tiles * tile, 3]` uint8.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image: expected [H, W, 3], got shape {image.shape}.")
  # Tiles are square: a non-square input is stretched, which keeps the drawn grid exact because
  # grid coordinates are relative to the image sides.
  tiles: list[tuple[str, Image.Image]] = []
  input_tile = _resize(image, tile, Image.Resampling.BILINEAR)
  tiles.append(("input", input_tile))
  if saliency is not None:
    tiles.append(("saliency", _resize(colorize(saliency), tile, Image.Resampling.BILINEAR)))
  if grid is not None:
    grid = np.asarray(grid)
    if grid.ndim != 3 or grid.shape[-1] != 2:
      raise ValueError(f"grid: expected [t, t, 2], got shape {grid.shape}.")
    drawn = input_tile.copy()
    draw = ImageDraw.Draw(drawn)
    # PIL truncates float coordinates; rounding puts each line on its nearest pixel.
    points = np.round(grid_to_pixels(grid, tile, align_corners=align_corners))
    rows = np.unique(np.linspace(0, grid.shape[0] - 1, grid_lines).round().astype(int))
    cols = np.unique(np.linspace(0, grid.shape[1] - 1, grid_lines).round().astype(int))
    for r in rows:
      draw.line([tuple(p) for p in points[r, :, :]], fill=_GRID_COLOR, width=1)
    for c in cols:
      draw.line([tuple(p) for p in points[:, c, :]], fill=_GRID_COLOR, width=1)
    tiles.append(("grid", drawn))
  tiles.append(("sampled", _resize(sampled, tile, Image.Resampling.NEAREST)))
  tiles.extend((title, _resize(picture, tile, Image.Resampling.NEAREST))
               for title, picture in extra_tiles)

  caption_height = _TITLE_HEIGHT if caption else 0
  panel = Image.new("RGB", (tile * len(tiles), tile + _TITLE_HEIGHT + caption_height), "white")
  draw = ImageDraw.Draw(panel)
  for i, (title, picture) in enumerate(tiles):
    panel.paste(picture, (i * tile, _TITLE_HEIGHT))
    draw.text((i * tile + 4, 2), title, fill="black")
  if caption:
    draw.text((4, tile + _TITLE_HEIGHT + 2), caption, fill="black")
  return np.asarray(panel)


def label_colors(labels: np.ndarray) -> np.ndarray:
  """`[h, w]` class maps (0 background, k + 1 class k) -> `[h, w, 3]` uint8 colours; void
  (`dense_metrics.IGNORE`) grey."""
  labels = np.asarray(labels, np.int64)
  colors = _CLASS_COLORS[np.where(labels > 0, (labels - 1) % (len(_CLASS_COLORS) - 1) + 1, 0)]
  return np.where((labels == dense_metrics.IGNORE)[..., None], np.uint8(_VOID_COLOR), colors)


def to_warped_frame(source_map: np.ndarray, grid: np.ndarray, source_size: int) -> np.ndarray:
  """A `[h, w, ...]` map on the source image (any stride) read at each grid node (nearest):
  what it shows where the task network looks. `grid` `[t, t, 2]` is align_corners=True."""
  source_map = np.asarray(source_map)
  pixels = grid_to_pixels(grid, source_size, align_corners=True)
  stride = source_size / source_map.shape[0]
  cols = np.clip((pixels[..., 0] + 0.5) // stride, 0, source_map.shape[1] - 1).astype(int)
  rows = np.clip((pixels[..., 1] + 0.5) // stride, 0, source_map.shape[0] - 1).astype(int)
  return source_map[rows, cols]


def _draw_boxes(picture: np.ndarray, boxes: dict[str, np.ndarray], scale: float) -> np.ndarray:
  image = Image.fromarray(picture)
  draw = ImageDraw.Draw(image)
  for kind, rows in boxes.items():
    for x0, y0, x1, y1 in np.asarray(rows, np.float64) * scale:
      draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=_BOX_COLORS[kind])
  return np.asarray(image)


def dense_tiles(prediction: np.ndarray, target: np.ndarray, grid: np.ndarray | None, *,
                source_size: int, tile: int = 224,
                boxes: dict[str, np.ndarray] | None = None) -> tuple[tuple[str, np.ndarray], ...]:
  """The tiles of a dense prediction: in the warped frame (with a grid), in the source frame, and
  the target.

  Args:
    prediction: `[h, w]` class map (segmentation) or `[h, w, 3]` uint8 picture (a heatmap).
    target: the same on the source image (any resolution).
    grid: `[t, t, 2]` the sampling grid, or None (the uniform model: no warped tile).
    source_size: side of the source image in pixels.
    tile: side of the tiles in pixels.
    boxes: `{"target" | "detected": [n, 4]}` (x0, y0, x1, y1) boxes in source pixels, drawn on
      the source-frame prediction.
  """
  def picture(values):
    values = np.asarray(values)
    return values if values.ndim == 3 else label_colors(values)

  def enlarged(values):
    return np.asarray(_resize(picture(values), tile, Image.Resampling.NEAREST))

  tiles = []
  if grid is not None:
    tiles.append(("predicted, warped", picture(to_warped_frame(prediction, grid, source_size))))
  predicted = enlarged(prediction)
  if boxes:
    predicted = _draw_boxes(predicted, boxes, tile / source_size)
  tiles.append(("predicted", predicted))
  tiles.append(("target", enlarged(target)))
  return tuple(tiles)


def write_panels(examples: Mapping[str, np.ndarray], *, step: int, directory: str,
                 writer: Any, align_corners: bool, task: str) -> None:
  """Saves one panel per example of an evaluation batch (fetched to the host) as
  `directory/step_<step>/example_<i>.png`, and gives each to `writer.image`."""
  step_dir = os.path.join(directory, f"step_{step:07d}")
  os.makedirs(step_dir, exist_ok=True)
  for i in range(len(examples["image"])):
    output = examples["output"][i]
    label = jax.tree.map(lambda x, i=i: x[i], examples["label"])
    grid = examples["grid"][i] if "grid" in examples else None
    extra_tiles = ()
    if task == "classification":
      caption = f"label {int(label)}, predicted {int(np.argmax(output))}"
    elif task == "regression":
      caption = f"target {np.round(label, 3).tolist()}, predicted {np.round(output, 3).tolist()}"
    else:
      extra_tiles, caption = _dense_panel(output, label, grid, task=task,
                                          detections=jax.tree.map(
                                              lambda x, i=i: x[i], examples.get("detections")))
    panel = make_panel(
        examples["image"][i], examples["sampled"][i],
        saliency=examples["saliency"][i] if "saliency" in examples else None,
        grid=grid, align_corners=align_corners, caption=caption, extra_tiles=extra_tiles)
    Image.fromarray(panel).save(os.path.join(step_dir, f"example_{i}.png"))
    writer.image(step, f"panels/example_{i}", panel)


# Detections drawn on a panel: those whose score is at least this.
_PANEL_SCORE = 0.3


def _dense_panel(output: np.ndarray, label: Mapping[str, np.ndarray], grid: np.ndarray | None,
                 *, task: str, detections: tuple[np.ndarray, ...] | None):
  """The dense tiles of one example and its caption."""
  source_size = label["segmentation"].shape[0]
  objects = label["labels"] >= 0
  if task == "segmentation":
    predicted = np.argmax(output, axis=-1)
    return (dense_tiles(predicted, label["segmentation"], grid,
                                   source_size=source_size),
            f"{int(objects.sum())} objects ({int(label['small'].sum())} small); classes "
            f"predicted (stride {source_size // output.shape[0]}) | target")
  k = dense_metrics.num_classes(output, task)
  heat = colorize(1 / (1 + np.exp(-output[..., :k].max(-1))))
  segmentation = label["segmentation"]
  target = colorize((segmentation > 0) & (segmentation != dense_metrics.IGNORE))
  boxes, scores, _ = detections
  kept = boxes[scores >= _PANEL_SCORE]
  tiles = dense_tiles(heat, target, grid, source_size=source_size,
                                 boxes={"target": label["boxes"][objects], "detected": kept})
  return tiles, (f"{int(objects.sum())} objects ({int(label['small'].sum())} small), "
                 f"{len(kept)} detections with score >= {_PANEL_SCORE} (red; targets green)")
