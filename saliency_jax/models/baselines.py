"""The paper's baselines, behind the same interface as `SaliencySampler`.

Every model maps `[B, H, W, 3]` images (uint8 0..255 or float 0..1) to `(outputs, extras)` with
`extras["sampled"]` the task network's `[B, T, T, 3]` input in 0..1, and takes the same optional
`blur_key` (the blur warm-up, applied to the task network's input). Localisation networks are
called `localisation_net` with a `backbone` (a truncated ResNet, "similar to f_s for fairness")
and a `head`, so they share the saliency network's learning-rate groups.

- `UniformSampler` (plain): area-average the image to the task size. With a task network whose
  top three convolutions are deformable, it is the deformable-convolution baseline.
- `STNAffine`: a spatial transformer (Jaderberg et al. 2015); the localisation network regresses
  an affine map `theta [2, 3]` from the low-resolution view, initialised to the identity.
- `STNThinPlateSpline`: the same with a thin-plate spline through `n x n` control points; the
  network regresses their displacements, initialised to zero (the identity).
- `GridEstimator`: the saliency network predicts the sampling positions (u, v) directly on the
  grid, as offsets from the uniform grid (initialised to zero), upsampled like the sampler's grid.
- `CAMCrop`: a first pass of the task network on the uniform view finds the peak of the class
  activation map (Zhou et al. 2016) of its predicted class; a square window of `crop_fraction`
  of the image side around it is cut from the full-resolution image, resampled to the task size,
  and fed to a second pass. Gradients flow through the second pass only. The first pass is a
  localisation, run as at inference (BatchNorm on its running statistics, no dropout) in
  training too, as the CAM papers localise with the trained network: so a training step
  updates the BatchNorm statistics once, from the crops the network learns on, not also from
  the uniform views.

Grids follow `grid_sample`'s convention (`ops.affine_grid` and `ops.tps_grid` build the
transformers' grids); an identity transform gives the plain bilinear point-sampling of the image.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax import ops
from saliency_jax.models import resnet
from saliency_jax.models import saliency_network
from saliency_jax.models import task


class LocalisationNetwork(nnx.Module):
  """Truncated ResNet, ReLU, global average pooling, a linear head (zero kernel, given bias).

  Attributes:
    backbone: the truncated ResNet.
    head: `nnx.Linear(channels, num_outputs)`.
  """

  def __init__(self, num_outputs: int, *, bias: np.ndarray | None = None,
               backbone: str | resnet.ResNetSpec = "resnet18", depth: int = 14,
               rngs: nnx.Rngs):
    self.backbone = saliency_network.truncated_resnet(backbone, depth, rngs=rngs)
    bias = np.zeros(num_outputs) if bias is None else np.asarray(bias)
    # A zero kernel starts the transformer at the bias (the identity), as in Jaderberg et al.
    self.head = nnx.Linear(
        self.backbone.num_features, num_outputs, kernel_init=nnx.initializers.zeros_init(),
        bias_init=lambda *_: jnp.asarray(bias, jnp.float32), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x `[B, h, w, 3]` normalised. Returns `[B, num_outputs]`."""
    features, _ = self.backbone(x)
    return self.head(jnp.mean(nnx.relu(features), axis=(1, 2)))


class UniformSampler(task.TaskModel):
  """The plain baseline: the image area-averaged to the task size, then the task network.

  Args:
    task_net: returns `(outputs, features)` from a normalised `[B, T, T, 3]` image.
    task_size: side T of the task network's input.
    blur_min: smallest blur size of the warm-up (None: the authors' 64 of 224, scaled).
    output_activation: None or "sigmoid".
  """

  def __init__(self, task_net: nnx.Module, *, task_size: int = 224, blur_min: int | None = None,
               output_activation: str | None = None):
    super().__init__(task_net, task_size=task_size, blur_min=blur_min,
                     output_activation=output_activation)

  def __call__(self, images: jax.Array, *, blur_key: jax.Array | None = None):
    """`[B, H, W, 3]` -> `(outputs, {"sampled"})`; see the module docstring."""
    task.check_images(images, min_size=self.task_size)
    return self.run_task_net(task.area_view(images, self.task_size), blur_key, {})


class _GridModel(task.TaskModel):
  """Samples the full-resolution image at a grid that `transform` predicts from the low-res view."""

  def __init__(self, task_net: nnx.Module, localisation_net: nnx.Module, *,
               task_size: int = 224, low_res_size: int = 224, align_corners: bool = True,
               blur_min: int | None = None, output_activation: str | None = None):
    super().__init__(task_net, task_size=task_size, blur_min=blur_min,
                     output_activation=output_activation)
    self.localisation_net = localisation_net
    self.low_res_size = int(low_res_size)
    self.align_corners = bool(align_corners)

  def transform(self, prediction: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The localisation network's output -> `(grid [B, T, T, 2], extras)`."""
    raise NotImplementedError(f"{type(self).__name__} must define transform().")

  def __call__(self, images: jax.Array, *, blur_key: jax.Array | None = None):
    """`[B, H, W, 3]` -> `(outputs, {"sampled", "grid", ...})`; see the module docstring."""
    task.check_images(images, min_size=self.task_size)
    view = task.imagenet_normalize(task.area_view(images, self.low_res_size))
    grid, extras = self.transform(self.localisation_net(view).astype(jnp.float32))
    sampled = ops.grid_sample(images, grid, align_corners=self.align_corners)
    return self.run_task_net(sampled * task.unit_scale(images), blur_key,
                             {"grid": grid, **extras})


class STNAffine(_GridModel):
  """Spatial transformer with an affine transform; extras add "theta" `[B, 2, 3]`.

  Args:
    task_net: the task network.
    localisation_net: a `LocalisationNetwork` with 6 outputs (see `affine_localisation`).
    task_size, low_res_size, align_corners, blur_min, output_activation: as `SaliencySampler`.
  """

  def transform(self, prediction):
    theta = prediction.reshape(-1, 2, 3)
    grid = ops.affine_grid(theta, (self.task_size,) * 2, align_corners=self.align_corners)
    return grid, {"theta": theta}


def affine_localisation(*, backbone: str | resnet.ResNetSpec, depth: int,
                        rngs: nnx.Rngs) -> LocalisationNetwork:
  """The localisation network of `STNAffine`, starting at the identity transform."""
  identity = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
  return LocalisationNetwork(6, bias=identity, backbone=backbone, depth=depth, rngs=rngs)


class STNThinPlateSpline(_GridModel):
  """Spatial transformer with a thin-plate spline; extras add "control_points" `[B, n*n, 2]`.

  Args:
    task_net: the task network.
    localisation_net: a `LocalisationNetwork` with `2 n^2` outputs (the displacements of the
      lattice points), e.g. `tps_localisation`.
    points_per_side: n, the control lattice is n x n.
    task_size, low_res_size, align_corners, blur_min, output_activation: as `SaliencySampler`.
  """

  def __init__(self, task_net: nnx.Module, localisation_net: nnx.Module, *,
               points_per_side: int = 4, task_size: int = 224, low_res_size: int = 224,
               align_corners: bool = True, blur_min: int | None = None,
               output_activation: str | None = None):
    super().__init__(task_net, localisation_net, task_size=task_size, low_res_size=low_res_size,
                     align_corners=align_corners, blur_min=blur_min,
                     output_activation=output_activation)
    if points_per_side < 2:
      raise ValueError(f"points_per_side must be at least 2; got {points_per_side}.")
    self.points_per_side = int(points_per_side)

  def transform(self, prediction):
    lattice = jnp.asarray(ops.control_lattice(self.points_per_side), jnp.float32)
    points = lattice + prediction.reshape(prediction.shape[0], -1, 2)
    grid = ops.tps_grid(points, (self.task_size,) * 2, align_corners=self.align_corners)
    return grid, {"control_points": points}


def tps_localisation(*, points_per_side: int, backbone: str | resnet.ResNetSpec, depth: int,
                     rngs: nnx.Rngs) -> LocalisationNetwork:
  """The localisation network of `STNThinPlateSpline`, starting at zero displacement."""
  return LocalisationNetwork(2 * points_per_side**2, backbone=backbone, depth=depth, rngs=rngs)


class GridEstimator(_GridModel):
  """The saliency network regresses the sampling grid itself (no saliency map, no attraction).

  Args:
    task_net: the task network.
    localisation_net: a `SaliencyNetwork` with `out_channels=2` and a zero-initialised head
      (see `grid_localisation`): offsets `(dx, dy)` from the uniform grid on its `g x g` cells.
    task_size, low_res_size, align_corners, blur_min, output_activation: as `SaliencySampler`.

  The coarse grid is the uniform grid `linspace(-1, 1, g)` plus the offsets, clipped to
  `[-1, 1]`, upsampled to the task size with the half-pixel bilinear convention: the same path as
  the sampler's attraction grid, whose uniform-saliency grid it starts from.
  """

  def transform(self, prediction):
    size = prediction.shape[1]
    coords = jnp.linspace(-1.0, 1.0, size)
    x, y = jnp.meshgrid(coords, coords)
    coarse = jnp.clip(jnp.stack([x, y], axis=-1) + prediction, -1.0, 1.0)
    return ops.bilinear_resize(coarse, (self.task_size, self.task_size)), {}


def grid_localisation(*, grid_size: int, backbone: str | resnet.ResNetSpec, depth: int,
                      rngs: nnx.Rngs) -> saliency_network.SaliencyNetwork:
  """The network of `GridEstimator`: the saliency network with two zero-initialised outputs."""
  return saliency_network.SaliencyNetwork(
      backbone=backbone, depth=depth, grid_size=grid_size, out_channels=2,
      head_init=nnx.initializers.zeros_init(), head_bias_init=nnx.initializers.zeros_init(),
      rngs=rngs)


@contextlib.contextmanager
def _inference_mode(module: nnx.Module):
  """Inside the block, `module`'s BatchNorm and dropout layers run as at inference."""
  # Each layer's own flag is restored, so a model in either mode leaves the block as it came.
  saved = [(layer, name, getattr(layer, name)) for _, layer in nnx.iter_graph(module)
           for name in ("use_running_average", "deterministic")
           if isinstance(layer, (nnx.BatchNorm, nnx.Dropout)) and hasattr(layer, name)]
  module.eval()
  try:
    yield
  finally:
    for layer, name, value in saved:
      setattr(layer, name, value)


class CAMCrop(task.TaskModel):
  """Crop around the class-activation peak of a first pass, classify the crop.

  Args:
    task_net: a network ending in global average pooling and one linear layer `fc`, naming its
      last spatial feature map `spatial_output` (ResNet, Inception-v3).
    crop_fraction: side of the crop window as a fraction of the image side (0.5: the central
      half of the image's width and height when the peak is in the middle). The window is moved
      inside the image when the peak is near a border.
    task_size, align_corners, blur_min, output_activation: as `SaliencySampler`.

  Extras add "cam" `[B, h, w]` (the first pass's class activation map) and "grid".
  """

  def __init__(self, task_net: nnx.Module, *, crop_fraction: float = 0.5, task_size: int = 224,
               align_corners: bool = True, blur_min: int | None = None,
               output_activation: str | None = None):
    super().__init__(task_net, task_size=task_size, blur_min=blur_min,
                     output_activation=output_activation)
    if not (isinstance(getattr(task_net, "fc", None), nnx.Linear)
            and hasattr(task_net, "spatial_output")):
      raise ValueError(f"CAM crop needs a task network ending in global average pooling and a "
                       f"linear layer `fc` (ResNet, Inception-v3); got "
                       f"{type(task_net).__name__}.")
    if not 0 < crop_fraction <= 1:
      raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction}.")
    self.crop_fraction = float(crop_fraction)
    self.align_corners = bool(align_corners)

  def class_activation_map(self, view: jax.Array) -> jax.Array:
    """`[B, T, T, 3]` normalised view -> `[B, h, w]` CAM of each image's predicted class.

    The task network runs in inference mode whatever the model's mode (see the module
    docstring): BatchNorm reads its running statistics and leaves them as they are.
    """
    with _inference_mode(self.task_net):
      logits, features = self.task_net(view)
    fmap = features[self.task_net.spatial_output]
    predicted = jnp.argmax(logits, axis=-1)
    class_weights = jnp.take(self.task_net.fc.kernel[...], predicted, axis=1).T  # [B, C]
    return jnp.einsum("bhwc,bc->bhw", fmap, class_weights)

  def __call__(self, images: jax.Array, *, blur_key: jax.Array | None = None):
    """`[B, H, W, 3]` -> `(outputs, {"sampled", "grid", "cam"})`; see the module docstring."""
    task.check_images(images, min_size=self.task_size)
    view = task.imagenet_normalize(task.area_view(images, self.task_size))
    cam = jax.lax.stop_gradient(self.class_activation_map(view))
    batch, height, width = cam.shape
    peak = jnp.argmax(cam.reshape(batch, -1), axis=-1)
    row, col = peak // width, peak % width
    # Centre of the peak cell, normalised; the window is then kept inside the image. In [-1, 1]
    # units the window's half-width equals its side as a fraction of the image side.
    half = self.crop_fraction
    centre = jnp.stack([(2.0 * col + 1.0) / width - 1.0, (2.0 * row + 1.0) / height - 1.0], -1)
    centre = jnp.clip(centre, -1.0 + half, 1.0 - half)
    # The window as an affine map: a scaling by `half` about the centre.
    scale = jnp.broadcast_to(half * jnp.eye(2), (batch, 2, 2))
    grid = ops.affine_grid(jnp.concatenate([scale, centre[..., None]], axis=-1),
                           (self.task_size,) * 2, align_corners=self.align_corners)
    sampled = ops.grid_sample(images, grid, align_corners=self.align_corners)
    return self.run_task_net(sampled * task.unit_scale(images), blur_key,
                             {"grid": grid, "cam": cam})
