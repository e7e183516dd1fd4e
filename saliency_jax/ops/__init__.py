"""Pure JAX ops of the saliency sampler. No Flax, tfds or TensorFlow here."""

from saliency_jax.ops.attraction import attraction_grid
from saliency_jax.ops.resize import area_resize
from saliency_jax.ops.resize import bilinear_resize
from saliency_jax.ops.saliency import saliency_sample
from saliency_jax.ops.saliency import softmax_saliency
from saliency_jax.ops.sampling import grid_sample

__all__ = [
    "area_resize",
    "attraction_grid",
    "bilinear_resize",
    "grid_sample",
    "saliency_sample",
    "softmax_saliency",
]
