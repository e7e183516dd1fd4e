"""Flax NNX models: backbones, the saliency network, the SaliencySampler layer and the baselines.

Entry points for the trainer: `build_model(config, num_outputs=..., rngs=...)`,
`param_labels(params)` (learning-rate groups) and `load_pretrained(model, ...)`. Every model is
called as `model(images, *, blur_key=None) -> (outputs, extras)`; see `factory` and `task`;
the fields and defaults of a model config are in `model_config`.
Weight conversion from torchvision lives in `saliency_jax.models.convert` (also a command).
"""

from saliency_jax.models.alexnet import AlexNet
from saliency_jax.models.baselines import CAMCrop
from saliency_jax.models.baselines import GridEstimator
from saliency_jax.models.baselines import LocalisationNetwork
from saliency_jax.models.baselines import STNAffine
from saliency_jax.models.baselines import STNThinPlateSpline
from saliency_jax.models.baselines import UniformSampler
from saliency_jax.models.blur import random_blur
from saliency_jax.models.deformable import DeformableConv
from saliency_jax.models.factory import build_model
from saliency_jax.models.factory import build_task_net
from saliency_jax.models.inception import InceptionV3
from saliency_jax.models.model_config import DEFAULTS
from saliency_jax.models.model_config import MODEL_NAMES
from saliency_jax.models.model_config import SAMPLER_RECIPE
from saliency_jax.models.model_config import TASK_NETS
from saliency_jax.models.model_config import default_model_config
from saliency_jax.models.pretrained import load_pretrained
from saliency_jax.models.pretrained import param_labels
from saliency_jax.models.resnet import ResNet
from saliency_jax.models.resnet import SPECS as RESNET_SPECS
from saliency_jax.models.resnet import ResNetSpec
from saliency_jax.models.resnet import build_resnet
from saliency_jax.models.saliency_network import SaliencyNetwork
from saliency_jax.models.sampler import SaliencySampler
from saliency_jax.models.torch_io import load_state_dict

__all__ = [
    "AlexNet",
    "CAMCrop",
    "DEFAULTS",
    "DeformableConv",
    "GridEstimator",
    "InceptionV3",
    "LocalisationNetwork",
    "MODEL_NAMES",
    "RESNET_SPECS",
    "ResNet",
    "ResNetSpec",
    "SAMPLER_RECIPE",
    "STNAffine",
    "STNThinPlateSpline",
    "SaliencyNetwork",
    "SaliencySampler",
    "TASK_NETS",
    "UniformSampler",
    "build_model",
    "build_resnet",
    "build_task_net",
    "default_model_config",
    "load_pretrained",
    "load_state_dict",
    "param_labels",
    "random_blur",
]
