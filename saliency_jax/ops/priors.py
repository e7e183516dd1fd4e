"""Fixed saliency priors: from bounding boxes (a kernel density estimate, FOVEA, LZU) and from
the detail that uniform downsampling would lose.

Both return log-density logits on the saliency map's cells (the density of `[-1, 1]^2`, so that
the uniform map is `log(1 / 4)` everywhere), mixed with the uniform density by `uniform_weight`
so that they are finite everywhere; they are ready for `softmax_saliency` / `saliency_sample`, or
to be added to a saliency network's logits (the product of the two maps, renormalised).

The box prior (`kde_saliency`).

FOVEA ("FOVEA: Foveated Image Magnification for Autonomous Navigation", ICCV 2021) and LZU warp
with a fixed saliency built from boxes, per image (the previous frame's detections) or over a
whole dataset (its training boxes). Here each box is one Gaussian kernel centred on the box, with
a standard deviation per axis of `sqrt((box_scale * size)^2 + bandwidth^2)` (the box's own
extent, so that large boxes spread their mass, plus the kernel bandwidth, so that a zero-area box
is still a proper kernel); the boxes of an image share its mass equally (`box_mass="equal"`) or
in inverse proportion to their areas (`"inverse_area"`: a warp that follows it gives its
magnification to the small boxes, whose detail downsampling loses, and leaves the large ones near
uniform sampling, where "equal" magnifies them too). The density is mixed
with the uniform density on `[-1, 1]^2` by `uniform_weight`, so that it is positive everywhere
and an image without boxes gets the uniform prior (the identity grid). The result is returned as
log-density logits, ready for `softmax_saliency` / `saliency_sample`; the softmax of the logits
is the density normalised over the map's cells.

The detail prior (`detail_saliency`). Uniform downsampling to a task input of `task_shape` replaces
each block of source pixels by its mean, losing the block's variance: the detail finer than the
task input's pixels, which a sampler exists to keep. The prior's density at a cell is that lost
variance (summed over the channels, images in 0..1) averaged over the cell's share of the image,
relative to its mean over the image. It needs no training and no labels, sees the full-resolution
image (the detail it measures is invisible in the low-resolution view), and is 0 for the
uniform map on an image without fine detail; it says where detail is, not which detail matters,
so a saliency network's logits refine it.

Coordinates: boxes are `(x0, y0, x1, y1)` in normalised `[-1, 1]` image coordinates
(`normalize_boxes` converts pixel boxes); saliency cell
`(i, j)` of a `(gh, gw)` map sits at `(-1 + 2 j / (gw - 1), -1 + 2 i / (gh - 1))`, the position
whose attraction it models in `attraction_grid`.
"""

from collections.abc import Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

from saliency_jax.ops import resize
from saliency_jax.ops import validation


def normalize_boxes(boxes: jax.Array, image_shape: Sequence[int], *,
                    align_corners: bool = True) -> jax.Array:
  """Pixel boxes -> the normalised `[-1, 1]` coordinates of `grid_sample` on that image.

  Args:
    boxes: `[..., 4]` `(x0, y0, x1, y1)` on pixel edges (pixel `k` spans `[k, k + 1)`, so a box
      around the whole image is `(0, 0, W, H)`).
    image_shape: `(H, W)` of the image the boxes are in.
    align_corners: the convention of the grid that will read the image: True puts the centres of
      the first and last pixels at -1 and 1 (the saliency map's cells and the dense model's
      grid), False the image's outer edges.

  Returns:
    `[..., 4]` float32 boxes, edge `e` of an `n`-pixel axis at `-1 + 2 (e - 0.5) / (n - 1)`
    (align_corners=True) or `-1 + 2 e / n` (False).

  Raises:
    ValueError: on a bad shape or image shape.
  """
  if not hasattr(boxes, "ndim"):
    boxes = jnp.asarray(boxes)
  if boxes.ndim < 1 or boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have shape [..., 4]; got shape {boxes.shape}.")
  height, width = validation.check_shape(image_shape, "image_shape")
  size = jnp.asarray([width, height] * 2, jnp.float32)
  boxes = boxes.astype(jnp.float32)
  if align_corners:
    return (boxes - 0.5) * 2.0 / jnp.maximum(size - 1.0, 1.0) - 1.0
  return boxes * 2.0 / size - 1.0


# How `kde_saliency` shares an image's mass among its boxes.
BOX_MASSES = ("equal", "inverse_area")


@functools.partial(jax.jit, static_argnames=("grid_shape", "box_mass"))
def _kde(boxes, valid, grid_shape, bandwidth, box_scale, uniform_weight, box_mass):
  gh, gw = grid_shape
  # Padding entries are replaced by a harmless box first, so that whatever they hold (NaN, inf)
  # reaches neither the values nor the gradients.
  boxes = jnp.where(valid[..., None], boxes.astype(jnp.float32), 0.0)
  ys = jnp.asarray(np.linspace(-1.0, 1.0, gh) if gh > 1 else np.zeros(1), jnp.float32)
  xs = jnp.asarray(np.linspace(-1.0, 1.0, gw) if gw > 1 else np.zeros(1), jnp.float32)
  cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
  cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
  sx = jnp.sqrt((box_scale * (boxes[..., 2] - boxes[..., 0])) ** 2 + bandwidth ** 2)
  sy = jnp.sqrt((box_scale * (boxes[..., 3] - boxes[..., 1])) ** 2 + bandwidth ** 2)
  # Log of each box's 2-D normal density at every cell, [B, N, gh, gw], separable in x and y.
  log_x = -0.5 * ((xs - cx[..., None]) / sx[..., None]) ** 2 - jnp.log(sx)[..., None]
  log_y = -0.5 * ((ys - cy[..., None]) / sy[..., None]) ** 2 - jnp.log(sy)[..., None]
  log_box = log_y[..., :, None] + log_x[..., None, :] - jnp.log(2.0 * jnp.pi)
  count = jnp.sum(valid, axis=-1)
  has_boxes = (count > 0)[:, None, None]
  if box_mass == "equal":
    log_mass = jnp.zeros(valid.shape, jnp.float32)
  else:  # Sides below the bandwidth count as the bandwidth, so that no box's mass is infinite.
    log_mass = -(jnp.log(jnp.maximum(boxes[..., 2] - boxes[..., 0], bandwidth))
                 + jnp.log(jnp.maximum(boxes[..., 3] - boxes[..., 1], bandwidth)))
  log_mass = jnp.where(valid, log_mass, -jnp.inf)
  # Each box's share of the image's mass; images without boxes take 0 (unused below).
  log_share = jnp.where(has_boxes[:, :, 0], log_mass - jax.nn.logsumexp(
      jnp.where(has_boxes[:, :, 0], log_mass, 0.0), axis=-1, keepdims=True), 0.0)
  log_share = log_share[..., None, None]
  terms = jnp.where(valid[..., None, None], log_box + log_share, -jnp.inf)
  # Images without boxes take finite dummy terms (their result is the uniform prior below), so
  # that the log-sum-exp of nothing cannot put NaN into any gradient.
  terms = jnp.where(has_boxes[:, None], terms, 0.0)
  mixture = jax.nn.logsumexp(terms, axis=1)
  # log((1 - eps) mixture + eps / 4), the uniform density on [-1, 1]^2 being 1 / 4.
  with_boxes = jnp.logaddexp(jnp.log1p(-uniform_weight) + mixture, jnp.log(uniform_weight / 4.0))
  return jnp.where(has_boxes, with_boxes, jnp.log(0.25))


def kde_saliency(
    boxes: jax.Array,
    grid_shape: Sequence[int],
    *,
    valid: jax.Array | None = None,
    bandwidth: float = 0.05,
    box_scale: float = 0.25,
    uniform_weight: float = 0.1,
    box_mass: str = "equal",
) -> jax.Array:
  """Saliency logits from boxes by kernel density estimation (see the module docstring).

  Args:
    boxes: `[B, N, 4]` `(x0, y0, x1, y1)` normalised boxes per image, or `[N, 4]` for one prior
      over a whole dataset's boxes (returned with a batch of 1). Zero-area boxes are fine.
    grid_shape: `(gh, gw)` of the saliency map.
    valid: `[B, N]` (or `[N]`) bool, False for padding entries (images with fewer than `N` boxes);
      None: all boxes count. An image with no valid box gets the uniform prior.
    bandwidth: the kernel's minimum standard deviation, in normalised units (2 = image width).
    box_scale: the standard deviation added per unit of box size (0.25: a box spans about
      +-2 standard deviations).
    uniform_weight: the share of the uniform density in the mixture, in (0, 1].
    box_mass: how an image's boxes share its mass, one of `BOX_MASSES`: "equal" (FOVEA, LZU),
      or "inverse_area" (in proportion to `1 / (max(w, bandwidth) * max(h, bandwidth))`).

  Returns:
    `[B, gh, gw]` float32 logits, the log density at each cell. Under `jit`, NaN in a valid box
    gives NaN logits for its image.

  Raises:
    ValueError: on bad shapes or options, or (outside `jit`) a valid box holding NaN or infinity.
  """
  if not hasattr(boxes, "ndim"):
    boxes = jnp.asarray(boxes)
  dataset = boxes.ndim == 2
  if dataset:
    boxes = boxes[None]
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have shape [batch, n, 4] or [n, 4]; got shape {boxes.shape}.")
  if not jnp.issubdtype(boxes.dtype, jnp.floating):
    raise ValueError(f"boxes must be floating (normalised coordinates); got dtype {boxes.dtype}.")
  grid_shape = validation.check_shape(grid_shape, "grid_shape")
  if valid is None:
    valid = jnp.ones(boxes.shape[:2], bool)
  else:
    valid = jnp.asarray(valid)
    if dataset:
      valid = valid[None]
    if valid.shape != boxes.shape[:2] or valid.dtype != jnp.bool_:
      raise ValueError(f"valid must be a bool array of shape {boxes.shape[:2]}; got shape "
                       f"{valid.shape} and dtype {valid.dtype}.")
  for name, value, low in (("bandwidth", bandwidth, 0.0), ("box_scale", box_scale, None)):
    if not np.isfinite(value) or value < 0 or (low is not None and value <= low):
      raise ValueError(f"{name} must be a {'positive' if low is not None else 'non-negative'} "
                       f"number; got {value!r}.")
  if not 0 < uniform_weight <= 1:
    raise ValueError(f"uniform_weight must be in (0, 1]; got {uniform_weight!r}.")
  if box_mass not in BOX_MASSES:
    raise ValueError(f"box_mass must be one of {BOX_MASSES}; got {box_mass!r}.")
  box_values, valid_values = validation.concrete_value(boxes), validation.concrete_value(valid)
  if box_values is not None and valid_values is not None:
    validation.check_finite(box_values[valid_values], "boxes")
  return _kde(boxes, valid, grid_shape, jnp.float32(bandwidth), jnp.float32(box_scale),
              jnp.float32(uniform_weight), box_mass)


def _lost_variance(images, task_shape, grid_shape):
  """`[B, gh, gw]`: the within-block variance that area downsampling to `task_shape` averages
  away, summed over the channels and averaged over each saliency cell's share of the image."""
  b, height, width, channels = images.shape
  th, tw = task_shape
  if images.dtype == jnp.uint8 and height % th == 0 and width % tw == 0:
    # Equal blocks of a uint8 image: exact int32 sums of the values and their squares, so that
    # no float copy of the full-resolution image is made (benchmarks/README.md).
    n = (height // th) * (width // tw)
    blocks = images.reshape(b, th, height // th, tw, width // tw, channels).astype(jnp.int32)
    total = jnp.sum(blocks, axis=(2, 4)).astype(jnp.float32)
    squares = jnp.sum(blocks * blocks, axis=(2, 4)).astype(jnp.float32)
    variance = (squares - total * total / n) / (n * 255.0**2)
  else:
    unit = 1.0 / 255.0 if images.dtype == jnp.uint8 else 1.0
    pixels = images.astype(jnp.float32) * unit
    mean = resize.area_resize(pixels, task_shape)
    variance = resize.area_resize(pixels * pixels, task_shape) - mean * mean
  lost = jnp.sum(jnp.maximum(variance, 0.0), axis=-1, keepdims=True)
  return resize.area_resize(lost, grid_shape)[..., 0]


@functools.partial(jax.jit, static_argnames=("task_shape", "grid_shape"))
def _detail(images, task_shape, grid_shape, uniform_weight):
  lost = _lost_variance(images, task_shape, grid_shape)
  mean = jnp.mean(lost, axis=(1, 2), keepdims=True)
  # An image with no detail at all (mean 0) gets the uniform prior.
  relative = jnp.where(mean > 0, lost / jnp.where(mean > 0, mean, 1.0), 1.0)
  return jnp.log(((1.0 - uniform_weight) * relative + uniform_weight) / 4.0)


def detail_saliency(
    images: jax.Array,
    task_shape: Sequence[int],
    grid_shape: Sequence[int],
    *,
    uniform_weight: float = 0.5,
) -> jax.Array:
  """Saliency logits from the detail that uniform downsampling would lose (module docstring).

  Args:
    images: `[B, H, W, C]` uint8 (0..255) or floating (0..1) full-resolution images.
    task_shape: `(h, w)` of the task input the images would be uniformly downsampled to (by area
      averaging); at most `(H, W)`.
    grid_shape: `(gh, gw)` of the saliency map.
    uniform_weight: the share of the uniform density in the mixture, in (0, 1]; 1 gives the
      uniform map.

  Returns:
    `[B, gh, gw]` float32 log-density logits, constant over the batch's gradients (the prior
    depends on the images only). An image without detail (a constant colour, or already at
    `task_shape`) gets the uniform map.

  Raises:
    ValueError: on bad shapes or options.
  """
  images = validation.check_image(images, "images")
  if images.dtype != jnp.uint8 and not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be uint8 (0..255) or floating (0..1); got dtype "
                     f"{images.dtype}.")
  task_shape = validation.check_shape(task_shape, "task_shape")
  grid_shape = validation.check_shape(grid_shape, "grid_shape")
  if task_shape[0] > images.shape[1] or task_shape[1] > images.shape[2]:
    raise ValueError(f"task_shape must be at most the images' (height, width) "
                     f"{tuple(images.shape[1:3])}; got {task_shape}.")
  if not 0 < uniform_weight <= 1:
    raise ValueError(f"uniform_weight must be in (0, 1]; got {uniform_weight!r}.")
  return jax.lax.stop_gradient(_detail(images, task_shape, grid_shape,
                                       jnp.float32(uniform_weight)))
