"""Fixed saliency priors estimated from the training data.

`box_prior` is FOVEA's (Thavamani et al., ICCV 2021) dataset-wide prior: where the objects of
the training set lie, as a kernel density estimate of their boxes (`ops.kde_saliency`), the
saliency of the dense model with `model.saliency="prior"` or `"both"`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

# Training images whose boxes estimate the prior.
PRIOR_IMAGES = 2000


def box_prior(config: ml_collections.ConfigDict) -> jax.Array | None:
  """The dense model's fixed saliency, `[g, g]` summing to 1: the kernel density estimate of the
  boxes of the first `PRIOR_IMAGES` training images on the saliency grid; None when the config's
  model uses no prior."""
  if config.model.name != "zoom_unzoom" or config.model.saliency not in ("prior", "both"):
    return None
  # Late: the ops and tfds/grain load only when a prior is needed.
  from saliency_jax import data  # pylint: disable=import-outside-toplevel
  from saliency_jax import ops  # pylint: disable=import-outside-toplevel
  boxes, valid = data.training_boxes(config.data, limit=PRIOR_IMAGES)
  image_size = config.data.image_size
  # The dense model's grid reads the image with align_corners=True (`models.dense`).
  boxes = ops.normalize_boxes(boxes.reshape(-1, 4), (image_size, image_size), align_corners=True)
  size = config.model.grid_size
  logits = ops.kde_saliency(boxes, (size, size), valid=jnp.asarray(valid.reshape(-1)))[0]
  return jax.nn.softmax(logits.reshape(-1)).reshape(size, size)
