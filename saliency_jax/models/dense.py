"""Zoom, backbone, unzoom, head: dense predictions in the source image's frame.

The path of "Learning to Zoom and Unzoom" (LZU) with this project's ops:
1. saliency on the grid: the softmax of a saliency network's logits on the low-resolution view,
   a fixed prior (a `[g, g]` map such as `ops.kde_saliency` of the training boxes), or both (their
   product, renormalised: the network's logits plus the prior's log); optionally times the
   detail prior of each image (`ops.detail_saliency`: where uniform downsampling to the task
   size would lose detail), which needs no labels and also serves alone;
2. the attraction grid at the task size and the warp of the full-resolution image (`grid_sample`,
   optionally anti-aliased);
3. the backbone on the warped image; each of its named `stages` is brought back into the
   uniform frame of the source (`ops.unwarp`) at its own resolution (its stride on the warped
   image, scaled to the source, but no finer than `out_stride`), then upsampled to `out_stride`;
4. a head on the sum of the unwarped stages (each projected to `head_width` channels):
   "segmentation" gives per-pixel logits over background and the classes; "detection" a
   CenterNet-style centre heatmap (one logit per class), box sizes and centre offsets; the
   detection head may add segmentation logits of the same fused map as an auxiliary output
   (the extra "segmentation_outputs", trained by the trainer's `segmentation_auxiliary`).
With no saliency network, fixed prior or detail prior, the grid is the identity (uniform
downsampling) and the model is the uniform baseline: the same backbone and head at the same
input size.

Outputs are in the source frame at `out_stride`, so labels, losses and metrics never see the
warp. Value conventions of the inputs: see `saliency_jax.models.task`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax import ops
from saliency_jax.ops import local_magnification
from saliency_jax.models import layers
from saliency_jax.models import task

HEADS = ("segmentation", "detection")
# The last convolution's initialisation; also the classifiers' (`model_config.HEAD_INITS`).
HEAD_INITS = ("torch", "zero")
# The segmentation head's training losses (`train.dense_metrics.segmentation_loss`).
SEGMENTATION_LOSSES = ("pixel", "class_balanced", "object_balanced")
_HEATMAP_BIAS = -2.19  # log(0.1 / 0.9)


class ZoomUnzoom(nnx.Module):
  """The dense model; see the module docstring.

  Args:
    backbone: a network returning `(output, features)` with the named `stages` among `features`
      and their channel counts in `backbone.stage_channels` (a `resnet.ResNet` built with
      `num_classes=None`).
    saliency_net: `[B, l, l, 3]` normalised view -> `[B, g, g, 1]` logits, or None.
    prior: `[g, g]` non-negative fixed saliency (kept as a constant, not trained), or None.
    num_classes: object classes (segmentation adds a background logit).
    head: one of `HEADS`.
    stages: backbone stages unwarped and summed, shallow to deep.
    task_size: side T of the warped image the backbone sees.
    low_res_size: side of the view the saliency network sees.
    out_stride: stride of the outputs on the source image.
    head_width: channels of the fused map.
    temperature, fwhm, padding, antialias, max_magnification: as `ops.saliency_sample`; the
      temperature divides the logits of the network and of the detail prior, not the fixed
      prior's.
    axis_aligned: the attraction grid's axis-aligned form (`ops.attraction_grid`), which
      `ops.unwarp` then inverts by its exact fast path.
    detail_prior: multiply the map by `ops.detail_saliency` of the images at the task size (add
      its logits), or use it alone when there is neither a network nor a prior.
    grid_size: side g of the map of the detail prior alone (otherwise the network's or the
      prior's).
    warp_gradient: True: the task's loss trains the saliency network through the warp and the
      unwarp. False: the grid is made from the map without gradient, so that the saliency network
      learns only from a loss on the extra "saliency" (the trainer's `saliency_supervision`, the
      boxes' density); needs a saliency network.
    head_init: "torch" (the heads' last convolution like the others) or "zero" (its kernel and
      bias at zero, but for the detection heatmap's prior bias: every pixel's logits start
      equal, at chance, whatever the features' scale).
    segmentation_auxiliary: the detection head also gives segmentation logits (background and
      the classes, initialised as `head_init` says) of the same fused map, in the extra
      "segmentation_outputs": a loss on every pixel of an object teaches its class to the
      features the centre heatmap reads, where the detection loss has one cell per object.
    magnification_input: the head's last convolutions also read the warp's log local
      magnification (`ops.magnification` of the grid, clipped to [1/16, 16], unwarped into the
      outputs' frame; 0 on the identity grid): the features describe an object as the warp shows
      it, and a box's size in the source is its size there over the magnification, which the
      features alone do not tell.
    warped_box_sizes: the detection head's size channels are read as each box's log width and
      height in the warped image, around the warped position of its cell (in units of `s`
      source pixels as the identity warp would give them), and the model returns the log sides
      that window spans in the source (`source_box_sizes`): the features see an object's extent
      as the warp shows it, and the grid, not the head, undoes the warp. The outputs keep their
      meaning, so losses and decoding are unchanged; on the identity grid it changes only boxes
      that reach beyond the image, which it cuts at the border as the source's boxes are.
    rngs: `nnx.Rngs` with a "params" stream.
  """

  def __init__(self, backbone: nnx.Module, saliency_net: nnx.Module | None = None, *,
               prior: jax.Array | None = None, num_classes: int, head: str = "segmentation",
               stages: tuple[str, ...] = ("layer2", "layer3", "layer4"), task_size: int = 128,
               low_res_size: int = 64, out_stride: int = 8, head_width: int = 64,
               temperature: float = 1.0, fwhm: float = 13.0, padding: int = 30,
               antialias: bool = True, max_magnification: float | None = None,
               axis_aligned: bool = False, detail_prior: bool = False, grid_size: int = 31,
               warp_gradient: bool = True, head_init: str = "torch",
               segmentation_auxiliary: bool = False, magnification_input: bool = False,
               warped_box_sizes: bool = False, rngs: nnx.Rngs):
    if head not in HEADS:
      raise ValueError(f"head must be one of {HEADS}; got {head!r}.")
    if num_classes < 1:
      raise ValueError(f"num_classes must be at least 1; got {num_classes}.")
    channels = getattr(backbone, "stage_channels", {})
    missing = [name for name in stages if name not in channels]
    if not stages or missing:
      raise ValueError(f"stages must be a non-empty tuple of the backbone's stages "
                       f"{tuple(channels)}; got {stages!r}.")
    if head_init not in HEAD_INITS:
      raise ValueError(f"head_init must be one of {HEAD_INITS}; got {head_init!r}.")
    if segmentation_auxiliary and head != "detection":
      raise ValueError(f"segmentation_auxiliary needs the detection head, whose extra output it "
                       f"is; got head {head!r}.")
    if warped_box_sizes and head != "detection":
      raise ValueError(f"warped_box_sizes needs the detection head, whose box sizes it reads; "
                       f"got head {head!r}.")
    if out_stride < 1:
      raise ValueError(f"out_stride must be at least 1; got {out_stride}.")
    if not warp_gradient and saliency_net is None:
      raise ValueError("warp_gradient=False needs a saliency network, the only part it leaves "
                       "to a loss on the map; got saliency_net None.")
    if prior is not None:
      prior = jnp.asarray(prior, jnp.float32)
      if prior.ndim != 2 or prior.shape[0] < 2 or prior.shape[1] < 2:
        raise ValueError(f"prior must be a [g, g] saliency map; got shape {prior.shape}.")
    # Named as every model's task network, so that pretrained weights load into it alike.
    self.task_net = backbone
    self.saliency_net = saliency_net
    # A constant of the model, saved with it but never updated by the optimizer.
    self.prior = None if prior is None else nnx.Variable(prior)
    self.num_classes, self.head, self.stages = num_classes, head, tuple(stages)
    self.task_size, self.low_res_size, self.out_stride = task_size, low_res_size, out_stride
    self.temperature, self.fwhm, self.padding = temperature, fwhm, padding
    self.antialias, self.max_magnification = antialias, max_magnification
    self.axis_aligned = bool(axis_aligned)
    self.detail_prior, self.grid_size = bool(detail_prior), grid_size
    self.warp_gradient = bool(warp_gradient)
    self.magnification_input = bool(magnification_input)
    self.warped_box_sizes = bool(warped_box_sizes)
    self.lateral = nnx.List([
        layers.conv(channels[name], head_width, 1, use_bias=True, rngs=rngs) for name in stages])
    self.fuse = layers.conv(head_width, head_width, 3, padding=1, use_bias=True, rngs=rngs)
    outputs = num_classes + (1 if head == "segmentation" else 4)
    zero = {"kernel_init": nnx.initializers.zeros_init()} if head_init == "zero" else {}
    read = head_width + int(self.magnification_input)
    self.out = layers.conv(read, outputs, 1, use_bias=True, rngs=rngs, **zero)
    self.segmentation_out = (
        layers.conv(read, num_classes + 1, 1, use_bias=True, rngs=rngs, **zero)
        if segmentation_auxiliary else None)
    if head == "detection":
      # CenterNet's start: every centre logit at the log-odds of 0.1, so that the focal loss of
      # the (many) empty cells does not swamp the first steps.
      bias = self.out.bias.get_value()
      self.out.bias.set_value(bias.at[:num_classes].set(_HEATMAP_BIAS))

  def _frames(self, features: dict[str, jax.Array], source: tuple[int, int]
              ) -> dict[tuple[int, int], list[str]]:
    """Stage names by the source-frame shape each is unwarped to: the source at the stage's
    own stride on the warped image (scaled by source / task size), at most the outputs'."""
    out_h, out_w = source[0] // self.out_stride, source[1] // self.out_stride
    frames: dict[tuple[int, int], list[str]] = {}
    for name in self.stages:
      h, w = features[name].shape[1:3]
      frame = (min(out_h, max(1, round(source[0] * h / self.task_size))),
               min(out_w, max(1, round(source[1] * w / self.task_size))))
      frames.setdefault(frame, []).append(name)
    return frames

  @property
  def uniform(self) -> bool:
    """True for the uniform baseline (no saliency network, no fixed or detail prior)."""
    return self.saliency_net is None and self.prior is None and not self.detail_prior

  def saliency(self, images: jax.Array) -> jax.Array | None:
    """`[B, H, W, 3]` images -> `[B, g, g]` saliency summing to 1, or None when uniform."""
    grid_shape = (self.grid_size,) * 2 if self.prior is None else self.prior.value.shape
    log_map = None
    if self.saliency_net is not None:
      view = task.area_view(images, self.low_res_size)
      log_map = self.saliency_net(task.imagenet_normalize(view))[..., 0]
      if self.prior is not None and log_map.shape[1:] != grid_shape:
        raise ValueError(f"prior must have the saliency network's grid shape "
                         f"{log_map.shape[1:]}; got {grid_shape}.")
      grid_shape = log_map.shape[1:]
    if self.detail_prior:
      detail = ops.detail_saliency(images, (self.task_size, self.task_size), grid_shape)
      log_map = detail if log_map is None else log_map + detail
    if log_map is not None:
      # As the sampler's: the temperature sharpens the image's own map (network and detail).
      log_map = log_map / self.temperature
    if self.prior is not None:
      prior = jnp.log(jnp.maximum(self.prior.value, 1e-12))
      log_map = (jnp.broadcast_to(prior, (images.shape[0],) + prior.shape) if log_map is None
                 else log_map + prior)
    if log_map is None:
      return None
    flat = jax.nn.softmax(log_map.reshape(log_map.shape[0], -1), axis=-1)
    return flat.reshape(log_map.shape)

  def __call__(self, images: jax.Array, *, blur_key: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the model.

    Args:
      images: `[B, H, W, 3]` uint8 (0..255) or float (0..1), H and W at least `task_size` and
        multiples of `out_stride`.
      blur_key: must be None: the dense model has no blur warm-up (the trainer's config checks
        ask for `blur_epochs=0`).

    Returns:
      `(outputs, extras)`. `outputs` `[B, H / s, W / s, K + 1]` segmentation logits (channel 0
      the background), or `[B, H / s, W / s, K + 4]` for detection: K centre-heatmap logits,
      then the box's log width and log height in units of `s` source pixels and the centre's
      offset in its cell (x, y; logits of a sigmoid), as `saliency_jax.train.dense_metrics`
      reads them. `extras`: "grid" `[B, T, T, 2]`, "sampled" `[B, T, T, 3]` (0..1), "covered"
      `[B, H / s, W / s]` (where the warp reaches the source), "saliency" `[B, g, g]` unless
      the model is uniform, and with `segmentation_auxiliary` "segmentation_outputs"
      `[B, H / s, W / s, K + 1]` (segmentation logits, channel 0 the background).
    """
    if blur_key is not None:
      raise ValueError("blur_key must be None: the dense model has no blur warm-up.")
    task.check_images(images, min_size=self.task_size)
    height, width = images.shape[1:3]
    if height % self.out_stride or width % self.out_stride:
      raise ValueError(f"images must have sides that are multiples of out_stride "
                       f"{self.out_stride}; got {height}x{width}.")
    size = (self.task_size, self.task_size)
    saliency = self.saliency(images)
    extras = {}
    if saliency is None:
      identity = local_magnification.identity_grid(self.task_size, self.task_size)
      grid = jnp.broadcast_to(identity, (images.shape[0],) + identity.shape)
    else:
      warping = saliency if self.warp_gradient else jax.lax.stop_gradient(saliency)
      grid = ops.attraction_grid(warping, size, fwhm=self.fwhm, padding=self.padding,
                                 max_magnification=self.max_magnification,
                                 axis_aligned=self.axis_aligned)
      extras["saliency"] = saliency
    sampled = ops.grid_sample(images, grid, align_corners=True, antialias=self.antialias)
    sampled = sampled * task.unit_scale(images)
    _, features = self.task_net(task.imagenet_normalize(sampled))
    out_shape = (height // self.out_stride, width // self.out_stride)
    # Maps of the warped image's pixels read in the outputs' frame, unwarped with the stage of
    # that resolution (no inverse of their own).
    extra = {}
    if self.magnification_input:
      # An input describing the warp, not a path for training it.
      local = ops.magnification(jax.lax.stop_gradient(grid), None)
      extra["log_magnification"] = jnp.log(jnp.clip(local, 1.0 / 16, 16.0))[..., None]
    if self.warped_box_sizes:
      # The warped image's own coordinates, unwarped: where each output cell sits in it (exact,
      # as the bilinear read of a linear map).
      identity = local_magnification.identity_grid(self.task_size, self.task_size)
      extra["warped_position"] = jnp.broadcast_to(identity, grid.shape)
    fused, covered, read = 0.0, None, {}
    for frame, names in self._frames(features, (height, width)).items():
      # Each stage is unwarped at its own resolution (one inverse per resolution), then
      # upsampled to the outputs' frame: deep stages have few pixels, and reading them at
      # every output pixel would only interpolate.
      here = list(extra.values()) if frame == out_shape else []
      unwarped, covered_here = ops.unwarp([features[name] for name in names] + here, grid,
                                          frame, source_shape=(height, width),
                                          axis_aligned=self.axis_aligned)
      if here:
        read = dict(zip(extra, unwarped[len(names):]))
      for name, stage in zip(names, unwarped):
        projected = self.lateral[self.stages.index(name)](stage)
        if frame != out_shape:
          projected = jax.image.resize(
              projected, (projected.shape[0], *out_shape, projected.shape[-1]), "bilinear")
        fused = fused + projected
      if frame == out_shape:
        covered = covered_here
    if covered is None:  # No stage as fine as the outputs: coverage at the outputs' pixels.
      maps = list(extra.values()) or [jnp.zeros((images.shape[0], 1, 1, 1), jnp.float32)]
      unwarped, covered = ops.unwarp(maps, grid, out_shape, source_shape=(height, width),
                                     axis_aligned=self.axis_aligned)
      read = dict(zip(extra, unwarped))
    hidden = nnx.relu(self.fuse(nnx.relu(fused)))
    if "log_magnification" in read:
      hidden = jnp.concatenate([hidden, read["log_magnification"].astype(hidden.dtype)], axis=-1)
    outputs = self.out(hidden)
    if "warped_position" in read:
      k = self.num_classes
      sizes = source_box_sizes(outputs[..., k:k + 2], read["warped_position"], covered,
                               jax.lax.stop_gradient(grid), (height, width),
                               stride=self.out_stride)
      outputs = jnp.concatenate(
          [outputs[..., :k], sizes.astype(outputs.dtype), outputs[..., k + 2:]], axis=-1)
    if self.segmentation_out is not None:
      extras["segmentation_outputs"] = self.segmentation_out(hidden)
    extras.update(grid=grid, sampled=sampled, covered=covered)
    return outputs, extras


def source_box_sizes(log_sizes: jax.Array, warped_position: jax.Array, covered: jax.Array,
                     grid: jax.Array, source_shape: tuple[int, int], *, stride: float
                     ) -> jax.Array:
  """Box sizes in the warped image -> the sizes they span in the source.

  Args:
    log_sizes: `[B, h, w, 2]` per output cell, the log width and height of a box in the warped
      image, centred on the cell's warped position, in units of `stride` source pixels as the
      identity warp would give them (a side of `exp(a) stride` source pixels spans
      `exp(a) stride 2 / (W - 1)` of the normalised warped frame).
    warped_position: `[B, h, w, 2]` the normalised warped position of each cell's centre (the
      inverse warp of the cell's source position).
    covered: `[B, h, w]` bool, where the warp reaches the cell.
    grid: `[B, T, T, 2]` the sampling grid.
    source_shape: `(H, W)` of the source image in pixels.
    stride: source pixels per output cell.

  Returns:
    `[B, h, w, 2]` float32 log width and height in units of `stride` source pixels of the window
    in the source: the horizontal (vertical) ends of the warped box, at the centre's height
    (column), brought through the grid (`ops.unwarp_points`, so that an end beyond the warped
    image stops at the border node's source position); exact for axis-aligned grids.
    Where `covered` is False, `log_sizes` unchanged. Gradients flow to `log_sizes` and the grid.
  """
  batch, h, w, _ = log_sizes.shape
  height, width = source_shape
  # Normalised (align_corners=True) units per source pixel, along x and y.
  per_pixel = jnp.array([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], jnp.float32)
  log_sizes = log_sizes.astype(jnp.float32)
  half = jnp.exp(log_sizes) * (stride / 2) * per_pixel  # [B, h, w, 2] normalised half-sides
  zero = jnp.zeros_like(half[..., :1])
  along_x = jnp.concatenate([half[..., :1], zero], axis=-1)
  along_y = jnp.concatenate([zero, half[..., 1:]], axis=-1)
  centre = warped_position.astype(jnp.float32)
  ends = jnp.stack([centre - along_x, centre + along_x, centre - along_y, centre + along_y],
                   axis=3)  # [B, h, w, 4, 2]
  source = ops.unwarp_points(ends.reshape(batch, h * w * 4, 2), grid).reshape(batch, h, w, 4, 2)
  sides = jnp.stack([source[..., 1, 0] - source[..., 0, 0],
                     source[..., 3, 1] - source[..., 2, 1]], axis=-1) / (per_pixel * stride)
  # A window the grid flattens (beyond the warped image, or a fold) has no size: a floor keeps
  # the log finite.
  converted = jnp.log(jnp.maximum(sides, 1e-4))
  return jnp.where(covered[..., None], converted, log_sizes)
