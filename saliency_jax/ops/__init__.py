"""Pure JAX ops of the saliency sampler. No Flax, tfds or TensorFlow here."""

from saliency_jax.ops.attraction import attraction_grid
from saliency_jax.ops.inverse import invert_grid
from saliency_jax.ops.inverse import unwarp
from saliency_jax.ops.local_magnification import magnification
from saliency_jax.ops.parametric import affine_grid
from saliency_jax.ops.parametric import control_lattice
from saliency_jax.ops.parametric import tps_grid
from saliency_jax.ops.priors import detail_saliency
from saliency_jax.ops.priors import kde_saliency
from saliency_jax.ops.priors import normalize_boxes
from saliency_jax.ops.resize import area_resize
from saliency_jax.ops.resize import bilinear_resize
from saliency_jax.ops.saliency import saliency_divergence
from saliency_jax.ops.saliency import saliency_information
from saliency_jax.ops.saliency import saliency_sample
from saliency_jax.ops.saliency import softmax_saliency
from saliency_jax.ops.sampling import grid_sample
from saliency_jax.ops.warping import unwarp_boxes
from saliency_jax.ops.warping import unwarp_points
from saliency_jax.ops.warping import warp_boxes
from saliency_jax.ops.warping import warp_points

__all__ = [
    "affine_grid",
    "area_resize",
    "attraction_grid",
    "control_lattice",
    "detail_saliency",
    "bilinear_resize",
    "grid_sample",
    "invert_grid",
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
