"""What every model does around its task network: checks, value range, normalisation, blur.

Value conventions of all models in this package:
- input images are `[B, H, W, 3]`, uint8 in 0..255 or floating in 0..1;
- `extras["sampled"]` (the task network's input, after any blur) is float32 in 0..1;
- networks see ImageNet-normalised inputs, `(x - mean) / std` of the 0..1 image, what
  torchvision's pretrained weights expect.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from saliency_jax import ops
from saliency_jax.models import blur

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUT_ACTIVATIONS = (None, "sigmoid")


def check_images(images: jax.Array, *, min_size: int) -> None:
  """Raises `ValueError` unless `images` is `[B, H, W, 3]` uint8 or float with H, W >= min_size."""
  if not hasattr(images, "shape") or len(images.shape) != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must have shape [batch, height, width, 3]; got shape "
                     f"{getattr(images, 'shape', None)}.")
  if not (images.dtype == jnp.uint8 or jnp.issubdtype(images.dtype, jnp.floating)):
    raise ValueError(f"images must be uint8 (0..255) or floating (0..1); got dtype "
                     f"{images.dtype}.")
  if min(images.shape[1:3]) < min_size:
    raise ValueError(f"images must be at least the task size, {min_size}x{min_size} pixels; got "
                     f"{images.shape[1]}x{images.shape[2]}.")


def unit_scale(images: jax.Array) -> float:
  """The factor that maps values of `images`' dtype to 0..1 (1/255 for uint8, else 1)."""
  return 1.0 / 255.0 if images.dtype == jnp.uint8 else 1.0


def imagenet_normalize(images: jax.Array) -> jax.Array:
  """`[B, H, W, 3]` in 0..1 -> ImageNet mean/std normalised float32."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def area_view(images: jax.Array, size: int) -> jax.Array:
  """`[B, H, W, 3]` uint8 or float images -> `[B, size, size, 3]` area average in 0..1."""
  return ops.area_resize(images, (size, size)) * unit_scale(images)


def check_output_activation(output_activation: str | None) -> None:
  if output_activation not in OUTPUT_ACTIVATIONS:
    raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}; got "
                     f"{output_activation!r}.")


def resolve_blur_min(blur_min: int | None, task_size: int) -> int:
  """`blur_min`, or the authors' 64-of-224 scaled to `task_size` when None; checked."""
  if blur_min is None:
    return blur.scaled_min_size(task_size)
  if not 1 <= blur_min <= task_size:
    raise ValueError(f"blur_min must be in [1, task_size={task_size}]; got {blur_min}.")
  return int(blur_min)


class TaskModel(nnx.Module):
  """The part every model shares: a task network fed `[B, T, T, 3]` images.

  Args:
    task_net: returns `(outputs, features)` from a normalised `[B, T, T, 3]` image.
    task_size: side T of the task network's input.
    blur_min: smallest blur size of the warm-up (None: the authors' 64 of 224, scaled to T).
    output_activation: None (logits) or "sigmoid" (the gaze regression).
  """

  def __init__(self, task_net: nnx.Module, *, task_size: int, blur_min: int | None,
               output_activation: str | None):
    check_output_activation(output_activation)
    self.task_net = task_net
    self.task_size = int(task_size)
    self.blur_min = resolve_blur_min(blur_min, self.task_size)
    self.output_activation = output_activation

  def run_task_net(self, sampled: jax.Array, blur_key: jax.Array | None,
                   extras: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Blur warm-up (when `blur_key` is given), normalisation, task network, activation.

    Args:
      sampled: `[B, T, T, 3]` the task network's input in 0..1.
      blur_key: PRNG key of the blur warm-up, or None for no blur.
      extras: the model's other outputs for inspection.

    Returns:
      `(outputs [B, num_outputs] float32, {"sampled": the input as the network saw it,
      **extras})`.
    """
    sampled = sampled.astype(jnp.float32)
    if blur_key is not None:
      sampled = blur.random_blur(sampled, blur_key, min_size=self.blur_min)
    outputs, _ = self.task_net(imagenet_normalize(sampled))
    outputs = outputs.astype(jnp.float32)
    if self.output_activation == "sigmoid":
      outputs = jax.nn.sigmoid(outputs)
    return outputs, {"sampled": sampled, **extras}
