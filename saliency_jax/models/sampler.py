"""The SaliencySampler layer: look at a low-resolution view, zoom into the salient regions.

Pipeline of the paper (Fig. 1) with the authors' numerics:
1. the full-resolution image (uint8 or float) is area-averaged to the low-resolution view
   (`low_res_size`, adaptive average pooling);
2. the saliency network maps the view to saliency logits on the grid (31x31);
3. softmax (with `temperature`), Gaussian attraction (`fwhm`, `padding`) -> sampling grid,
   upsampled to the task size;
4. the full-resolution image is sampled bilinearly at the grid (`align_corners`), reading the
   uint8 image only at the taps;
5. optionally blurred (the warm-up), normalised, and fed to the task network.
Value conventions: see `saliency_jax.models.task`.
"""

import inspect
import math

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax import ops
from saliency_jax.models import task

# The exploration bump's standard deviation, in saliency cells: about a small object's extent on
# the 31x31 grid (the zoom suite's oracle warp, benchmarks/zoom_oracle.py, uses the same).
EXPLORE_WIDTH = 1.5
UNIFORM_VIEWS = ("off", "pooled", "each", "mean")

# The authors' numerics are the ops' defaults; the layer's are the same, written once there.
_GRID = inspect.signature(ops.attraction_grid).parameters
_SAMPLE = inspect.signature(ops.saliency_sample).parameters


def _check_amount(value: float, name: str) -> float:
  if not (math.isfinite(value) and value >= 0):
    raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
  return float(value)


class SaliencySampler(task.TaskModel):
  """Saliency network + attraction grid + sampling + task network.

  Args:
    task_net: returns `(outputs, features)` from a normalised `[B, T, T, 3]` image.
    saliency_net: returns `[B, g, g, 1]` saliency logits from the normalised low-res view (a
      `SaliencyNetwork`).
    task_size: side T of the task network's input (the authors: 224).
    low_res_size: side of the view the saliency network sees (the authors: 224).
    fwhm: Gaussian kernel width, in grid cells (the authors' code: 13).
    padding: grid cells of border replication (the authors: 30).
    temperature: softmax temperature of the saliency logits; below 1 zooms harder.
    align_corners: `grid_sample` convention; True as the authors' PyTorch 0.4 ran.
    blur_min: smallest blur size of the warm-up, in pixels at this task size; None: the
      authors' 64 of 224, scaled to the task size.
    output_activation: None (logits) or "sigmoid" (the gaze regression).
    max_magnification: None (no cap) or a cap, at least 1, on the grid's local magnification
      relative to uniform sampling (`ops.attraction_grid`'s `max_magnification`).
    cap_at_source: True: the cap is the source's own resolution (`ops.saliency_sample`'s
      `max_magnification="source"`): no region is magnified past the detail the image holds,
      and the map cannot pull the grid into a point (which samples one flat colour); needs
      `max_magnification` None.
    antialias: True: each sample averages the image over its footprint where the warp
      compresses (`ops.grid_sample`'s `antialias`), so that the squeezed regions do not alias.
    axis_aligned: the attraction grid's axis-aligned form (`ops.attraction_grid`'s).
    exact_identity: True: a uniform map samples exactly as uniform downsampling
      (`ops.saliency_sample`'s `exact_identity`), so that a zero saliency head starts as the
      uniform baseline; False: the authors' grid, which is only roughly the identity.
    detail_prior: True: the saliency network's logits are added to `ops.detail_saliency`'s (the
      detail that uniform downsampling to the task size would lose, measured on the
      full-resolution image): the map is the product of the two, so the sampler starts zoomed
      on fine detail and the network learns which of it matters.
    explore: in training mode (`model.train()`), each example's logits get a Gaussian bump of
      this height (standard deviation `EXPLORE_WIDTH` cells) on a cell drawn from its saliency
      map, so that the task network also sees zoomed views of places the map does not yet favour
      and the warp's gradient can tell whether they help; 0 (the default) for none. Evaluation
      (`model.eval()`) never explores: it reads the map alone.
    glimpses: 1 (the paper's single view), or K > 1 (with `explore > 0`, classification only):
      in training mode each example is seen through K views, each with an exploration bump on
      its own cell drawn from the map; the outputs are the log of the views' mean class
      probabilities (multiple-instance pooling: the view that reads the class best carries the
      example), and the extras "glimpse_outputs" `[K, B, C]` and "glimpse_log_prob" `[K, B]`
      (each drawn cell's log probability under the map, differentiable) let the train step
      move the map towards the cells whose views lose least (`train.steps`). Evaluation uses
      the single view of the map.
    dead_zone: logits of the saliency network within this of their mean over the grid count as
      the mean (each is soft-thresholded towards it), so that a map whose logits vary less
      leaves the grid exactly uniform; the gradient passes as if there were no threshold
      (straight through), so the network learns while the warp stays still. 0 (the default)
      for none.
    saliency_cost: in training mode, the extra "penalty" `[B]` is this times the saliency
      network's map's information (`ops.saliency_information`, nats), for the train step to
      add to each example's loss: the warp must pay for itself in the task's loss, so that the
      map stays uniform (uniform downsampling) where zooming does not help. 0 (the default)
      for none.
    uniform_view: "off" (the paper's layer), or (classification only) the task network also
      reads the uniform view (the image area-averaged to the task size, as `UniformSampler`
      reads it) in the same batch, and the outputs are the log of the two views' mean class
      probabilities. "pooled": trained on those outputs (multiple-instance pooling, as the
      glimpses'); "each": each view is trained on its own loss (the extra "view_outputs"
      `[2, B, C]` in training mode, which the train step then uses instead of the outputs:
      the sum of the two views' losses); "mean": the same with the mean of the two losses
      (the extra "view_weights" `[2]`, 0.5 each), which at the identity is exactly the
      uniform baseline's gradient, where the sum is twice it.
      The task network learns to read the plain view whatever the warp does, so the layer keeps
      what uniform downsampling reads and the warped view adds what it alone reads; the task
      network runs twice per image. Evaluation also returns "view_outputs".
    saliency_supervision: in training mode (logits outputs, one glimpse), the extra "penalty"
      `[B]` gains this times the KL divergence of the map from the task network's evidence in
      the view it reads, brought back to the source (`evidence_map`: where its input gradient
      is, unwarped to the map's cells), times the network's confidence there (0 at chance, so
      that a network that reads nothing leaves the map alone), without gradient to the task
      network: the saliency network learns to favour, in the low-resolution view, where the
      task network finds what it reads, which the task's gradient through the warp alone does
      not teach it (README, the zoom-task suite). At the identity grid the evidence is the
      uniform view's; once the map zooms it follows what the zoomed view shows. 0 (the
      default) for none; the task network then runs once more per image, forward and back.
    warp_gradient: True (the paper): the task's loss trains the saliency network through the
      warp. False (with `saliency_supervision > 0`): the grid is made from the map without
      gradient, so that the saliency network learns from the evidence supervision alone, whose
      gradient is consistent from batch to batch where the warp's is mostly noise (README, the
      zoom-task suite). Then the confidence's weight is the network's only gradient, which an
      optimizer that normalises its step (Adam) follows at full speed even near chance.
    rngs: `nnx.Rngs` with a "params" stream, from which the exploration's stream is forked;
      needed only when `explore > 0`.

  Attributes:
    task_net, saliency_net: the two networks (`saliency_net.backbone`, `saliency_net.head`).
  """

  def __init__(self, task_net: nnx.Module, saliency_net: nnx.Module, *, task_size: int = 224,
               low_res_size: int = 224, fwhm: float = _GRID["fwhm"].default,
               padding: int = _GRID["padding"].default,
               temperature: float = _SAMPLE["temperature"].default,
               align_corners: bool = _SAMPLE["align_corners"].default,
               blur_min: int | None = None, output_activation: str | None = None,
               max_magnification: float | None = _GRID["max_magnification"].default,
               antialias: bool = _SAMPLE["antialias"].default,
               exact_identity: bool = _SAMPLE["exact_identity"].default,
               axis_aligned: bool = _GRID["axis_aligned"].default,
               cap_at_source: bool = False, detail_prior: bool = False, explore: float = 0.0,
               glimpses: int = 1, dead_zone: float = 0.0, saliency_cost: float = 0.0,
               uniform_view: str = "off", saliency_supervision: float = 0.0,
               warp_gradient: bool = True, rngs: nnx.Rngs | None = None):
    super().__init__(task_net, task_size=task_size, blur_min=blur_min,
                     output_activation=output_activation)
    if temperature <= 0:
      raise ValueError(f"temperature must be positive; got {temperature!r}.")
    self.saliency_net = saliency_net
    self.low_res_size = int(low_res_size)
    self.fwhm = float(fwhm)
    self.padding = int(padding)
    self.temperature = float(temperature)
    self.align_corners = bool(align_corners)
    if max_magnification is not None and not max_magnification >= 1:
      raise ValueError(f"max_magnification must be None or at least 1; got "
                       f"{max_magnification!r}.")
    if cap_at_source and max_magnification is not None:
      raise ValueError(f"cap_at_source needs max_magnification None (the cap is the source's "
                       f"resolution); got {max_magnification!r}.")
    self.max_magnification = ("source" if cap_at_source else
                              None if max_magnification is None else float(max_magnification))
    self.antialias = bool(antialias)
    self.exact_identity = bool(exact_identity)
    self.axis_aligned = bool(axis_aligned)
    self.detail_prior = bool(detail_prior)
    _check_amount(explore, "explore")
    if explore > 0 and rngs is None:
      raise ValueError("explore > 0 needs rngs=, the stream its draws come from; got None.")
    self.explore = float(explore)
    if not (isinstance(glimpses, int) and glimpses >= 1):
      raise ValueError(f"glimpses must be an int >= 1; got {glimpses!r}.")
    if glimpses > 1 and (explore <= 0 or output_activation is not None):
      raise ValueError(f"glimpses > 1 needs explore > 0 (the views' bumps) and logits outputs "
                       f"(output_activation None); got explore {explore!r} and "
                       f"output_activation {output_activation!r}.")
    self.glimpses = glimpses
    if uniform_view not in UNIFORM_VIEWS:
      raise ValueError(f"uniform_view must be one of {UNIFORM_VIEWS}; got {uniform_view!r}.")
    if uniform_view != "off" and (glimpses > 1 or output_activation is not None):
      raise ValueError(f"uniform_view needs a single glimpse and logits outputs "
                       f"(output_activation None); got glimpses {glimpses!r} and "
                       f"output_activation {output_activation!r}.")
    self.uniform_view = uniform_view
    self.saliency_supervision = _check_amount(saliency_supervision, "saliency_supervision")
    if saliency_supervision > 0 and (glimpses > 1 or output_activation is not None):
      raise ValueError(f"saliency_supervision needs a single glimpse and logits outputs "
                       f"(output_activation None); got glimpses {glimpses!r} and "
                       f"output_activation {output_activation!r}.")
    if not warp_gradient and saliency_supervision == 0:
      raise ValueError("warp_gradient=False needs saliency_supervision > 0, or the saliency "
                       "network learns nothing; got saliency_supervision 0.")
    self.warp_gradient = bool(warp_gradient)
    self.dead_zone = _check_amount(dead_zone, "dead_zone")
    self.saliency_cost = _check_amount(saliency_cost, "saliency_cost")
    # Only an exploring layer holds a stream, so that other checkpoints keep their state.
    self.explore_rngs = rngs["params"].fork() if explore > 0 else nnx.data(None)
    self.deterministic = False  # nnx's train() / eval() set it.

  def saliency_logits(self, images: jax.Array) -> jax.Array:
    """`[B, H, W, 3]` images -> `[B, g, g]` saliency logits (before the softmax), with the
    exploration bump of a single view in training mode."""
    return self._explored(self._map_logits(images)[0])

  def _explored(self, logits: jax.Array) -> jax.Array:
    if self.explore > 0 and self.glimpses == 1 and not self.deterministic:
      cell = self._draw(logits, (logits.shape[0],))
      logits = logits + self._bump(cell, logits.shape[1:])
    return logits

  def _map_logits(self, images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The map's logits (the network's, plus the detail prior's), and the extras of its cost:
    "penalty" `[B]` in training mode with `saliency_cost > 0`, charging the network's map."""
    view = task.area_view(images, self.low_res_size)
    logits = self.saliency_net(task.imagenet_normalize(view))[..., 0]
    extras = {}
    if self.saliency_cost > 0 and not self.deterministic:
      information = ops.saliency_information(
          ops.softmax_saliency(logits, temperature=self.temperature))
      extras["penalty"] = self.saliency_cost * information
    if self.dead_zone > 0:
      centred = logits - jnp.mean(logits, axis=(1, 2), keepdims=True)
      shrunk = jnp.sign(centred) * jnp.maximum(jnp.abs(centred) - self.dead_zone, 0.0)
      logits = centred + jax.lax.stop_gradient(shrunk - centred)
    if self.detail_prior:
      logits = logits + ops.detail_saliency(images, (self.task_size, self.task_size),
                                            logits.shape[1:])
    return logits, extras

  def _log_map(self, logits: jax.Array) -> jax.Array:
    """`[B, g * g]` log probabilities of the map's cells (the softmax the grid is made from)."""
    return jax.nn.log_softmax(logits.reshape(logits.shape[0], -1) / self.temperature, axis=-1)

  def _draw(self, logits: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Cells (flat indices) drawn from each example's map: `shape` ending in the batch."""
    return jax.random.categorical(self.explore_rngs(),
                                  jax.lax.stop_gradient(self._log_map(logits)), shape=shape)

  def _bump(self, cell: jax.Array, grid_shape: tuple[int, int]) -> jax.Array:
    """`cell.shape + grid_shape`: a bump of height `explore` on each (flat) cell."""
    gh, gw = grid_shape
    rows = jnp.arange(gh, dtype=jnp.float32)[:, None] - (cell // gw)[..., None, None]
    cols = jnp.arange(gw, dtype=jnp.float32)[None, :] - (cell % gw)[..., None, None]
    return self.explore * jnp.exp(-(rows**2 + cols**2) / (2.0 * EXPLORE_WIDTH**2))

  def evidence_map(self, view: jax.Array, grid: jax.Array, source_shape: tuple[int, int],
                   grid_shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
    """The task network's evidence in the view it reads, on the map's cells, and its confidence.

    Args:
      view: `[B, T, T, 3]` (0..1) the task network's input.
      grid: `[B, T, T, 2]` the grid that sampled `view` from the source.
      source_shape: `(H, W)` of the source image.
      grid_shape: `(gh, gw)` of the saliency map.

    Returns:
      `([B, gh, gw] density, [B] confidence)`, without gradient. The density: the magnitude of
      the gradient, with respect to the view, of each image's predicted class's logit less the
      mean logit (a label-free, non-saturating score), summed over the colours, area-pooled to
      the map's size in the view and brought back to the source's cells by `ops.unwarp`: an
      intensity per source area, which a magnified region's many pixels do not inflate, and at
      the identity grid the uniform view's own pooled evidence. Made a density and mixed with
      the uniform one (1/10). The confidence: how far the predicted class's probability is from
      chance, `(p - 1/K) / (1 - 1/K)` in [0, 1]: 0 where the network reads nothing and its
      gradient points at whatever it happens to react to. The network runs as a copy in the
      model's mode, whose batch statistics and random streams are left behind.
    """
    graphdef, state = nnx.split(self.task_net)
    state = jax.lax.stop_gradient(state)

    def margin(v):
      logits, _ = nnx.merge(graphdef, state, copy=True)(task.imagenet_normalize(v))
      logits = logits.astype(jnp.float32)
      predicted = jax.lax.stop_gradient(jnp.argmax(logits, axis=-1))
      score = jnp.take_along_axis(logits, predicted[:, None], axis=-1)[:, 0]
      return jnp.sum(score - jnp.mean(logits, axis=-1)), logits

    gradient, logits = jax.grad(margin, has_aux=True)(jax.lax.stop_gradient(view))
    pooled = ops.area_resize(jnp.sum(jnp.abs(gradient), axis=-1)[..., None], grid_shape)
    # "border": a source cell no view pixel samples reads its nearest neighbour's evidence.
    unwarped = ops.unwarp(pooled, jax.lax.stop_gradient(grid), grid_shape,
                          source_shape=source_shape, padding_mode="border",
                          align_corners=self.align_corners)[0][..., 0]
    total = jnp.sum(unwarped, axis=(1, 2), keepdims=True)
    cells = grid_shape[0] * grid_shape[1]
    density = jnp.where(total > 0, unwarped / jnp.where(total > 0, total, 1.0), 1.0 / cells)
    chance = 1.0 / logits.shape[-1]
    top = jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1)
    confidence = jnp.clip((top - chance) / (1.0 - chance), 0.0, 1.0)
    return jax.lax.stop_gradient((0.9 * density + 0.1 / cells, confidence))

  def _evidence_penalty(self, source_shape: tuple[int, int], sampled: jax.Array,
                        extras: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """`extras` with the evidence supervision's KL divergence, weighted by the task network's
    confidence, added to its "penalty"."""
    if self.saliency_supervision == 0 or self.deterministic:
      return extras
    saliency = extras["saliency"]
    target, confidence = self.evidence_map(sampled, extras["grid"], source_shape,
                                           saliency.shape[1:])
    divergence = ops.saliency_divergence(target, saliency)
    penalty = extras.get("penalty", 0.0) + self.saliency_supervision * confidence * divergence
    return {**extras, "penalty": penalty}

  def _sample(self, images: jax.Array, logits: jax.Array):
    return ops.saliency_sample(
        images, logits, (self.task_size, self.task_size), temperature=self.temperature,
        align_corners=self.align_corners, antialias=self.antialias, fwhm=self.fwhm,
        padding=self.padding, max_magnification=self.max_magnification,
        axis_aligned=self.axis_aligned, exact_identity=self.exact_identity)

  def _glimpse_call(self, images, blur_key):
    """Training with `glimpses` views per example (see the class docstring)."""
    logits, cost = self._map_logits(images)
    b, k = logits.shape[0], self.glimpses
    cells = self._draw(logits, (k, b))
    views = logits[None] + self._bump(cells, logits.shape[1:])
    views = views.reshape((k * b,) + logits.shape[1:])
    repeated = jnp.broadcast_to(images[None], (k,) + images.shape).reshape(
        (k * b,) + images.shape[1:])
    sampled, grid, saliency = self._sample(repeated, views)
    outputs, extras = self.run_task_net(sampled * task.unit_scale(images), blur_key,
                                        {"grid": grid, "saliency": saliency})
    per_view = jax.nn.log_softmax(outputs.reshape(k, b, -1), axis=-1)
    pooled = jax.nn.logsumexp(per_view, axis=0) - jnp.log(float(k))
    log_prob = jnp.take_along_axis(self._log_map(logits), cells.T, axis=-1).T
    # The panels' extras: the first view of each example.
    extras = {name: value[:b] for name, value in extras.items()}
    return pooled, {**extras, **cost, "glimpse_outputs": outputs.reshape(k, b, -1),
                    "glimpse_log_prob": log_prob}

  def __call__(self, images: jax.Array, *,
               blur_key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs the layer and the task network.

    Args:
      images: `[B, H, W, 3]` uint8 (0..255) or float (0..1), H, W >= task_size.
      blur_key: PRNG key of the blur warm-up (a size per example), or None for no blur.

    Returns:
      `(outputs [B, num_outputs], extras)` with extras "sampled" `[B, T, T, 3]` (0..1, the task
      network's input), "grid" `[B, T, T, 2]` ((x, y) in [-1, 1]) and "saliency" `[B, g, g]`
      (the softmax map, summing to 1); in training mode with `saliency_cost > 0` or
      `saliency_supervision > 0`, "penalty" `[B]`, to be added to each example's loss; with
      the uniform view, "view_outputs" `[2, B, C]` (the warped view's, then the uniform
      view's) in evaluation, and in training with "each" or "mean".
    """
    task.check_images(images, min_size=self.task_size)
    if self.glimpses > 1 and not self.deterministic:
      return self._glimpse_call(images, blur_key)
    logits, cost = self._map_logits(images)
    logits = self._explored(logits)
    if self.warp_gradient:
      sampled, grid, saliency = self._sample(images, logits)
    else:
      sampled, grid, _ = self._sample(images, jax.lax.stop_gradient(logits))
      saliency = ops.softmax_saliency(logits, temperature=self.temperature)
    sampled = sampled * task.unit_scale(images)
    extras = self._evidence_penalty(images.shape[1:3], sampled,
                                    {"grid": grid, "saliency": saliency, **cost})
    if self.uniform_view == "off":
      return self.run_task_net(sampled, blur_key, extras)
    b = images.shape[0]
    both = jnp.concatenate([sampled.astype(jnp.float32),
                            task.area_view(images, self.task_size)], axis=0)
    outputs, extras = self.run_task_net(both, blur_key, extras)
    per_view = jax.nn.log_softmax(outputs.reshape(2, b, -1), axis=-1)
    pooled = jax.nn.logsumexp(per_view, axis=0) - jnp.log(2.0)
    extras = {**extras, "sampled": extras["sampled"][:b]}
    if self.deterministic or self.uniform_view in ("each", "mean"):
      extras["view_outputs"] = outputs.reshape(2, b, -1)
    if self.uniform_view == "mean":
      extras["view_weights"] = jnp.full((2,), 0.5, jnp.float32)
    return pooled, extras
