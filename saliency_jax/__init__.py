"""saliency_jax: the saliency sampler (Recasens et al., "Learning to Zoom", ECCV 2018) in JAX.

The top level re-exports the pure ops only, so `import saliency_jax` needs nothing beyond JAX.
The Flax models live in `saliency_jax.models`, the input pipelines in `saliency_jax.data` and the
trainer in `saliency_jax.train`.
"""

from saliency_jax.ops import affine_grid
from saliency_jax.ops import area_resize
from saliency_jax.ops import attraction_grid
from saliency_jax.ops import control_lattice
from saliency_jax.ops import bilinear_resize
from saliency_jax.ops import grid_sample
from saliency_jax.ops import invert_grid
from saliency_jax.ops import detail_saliency
from saliency_jax.ops import kde_saliency
from saliency_jax.ops import normalize_boxes
from saliency_jax.ops import magnification
from saliency_jax.ops import saliency_divergence
from saliency_jax.ops import saliency_information
from saliency_jax.ops import saliency_sample
from saliency_jax.ops import softmax_saliency
from saliency_jax.ops import tps_grid
from saliency_jax.ops import unwarp
from saliency_jax.ops import unwarp_boxes
from saliency_jax.ops import unwarp_points
from saliency_jax.ops import warp_boxes
from saliency_jax.ops import warp_points

__version__ = "0.1.0"

__all__ = [
    "affine_grid",
    "area_resize",
    "attraction_grid",
    "control_lattice",
    "bilinear_resize",
    "grid_sample",
    "invert_grid",
    "detail_saliency",
    "kde_saliency",
    "normalize_boxes",
    "magnification",
    "saliency_divergence",
    "saliency_information",
    "saliency_sample",
    "softmax_saliency",
    "tps_grid",
    "unwarp",
    "unwarp_boxes",
    "unwarp_points",
    "warp_boxes",
    "warp_points",
]
