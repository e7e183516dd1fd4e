"""The model config: every model field with its default, their checks, and their parsing.

One home for each default: the sampler's numerics are the ops' own defaults (the authors'
values), read from `saliency_jax.ops`'s signatures. `saliency_jax.train.config` nests
`default_model_config()` as `config.model` and runs `CHECKS` with the trainer's own rows;
`parse_model_config` is what `factory.build_model` calls on a config given alone.
"""

from collections.abc import Mapping
import inspect
import math
from typing import Any

import ml_collections
from ml_collections import config_dict

from saliency_jax import ops
from saliency_jax.ops import priors
from saliency_jax import schema
from saliency_jax.models import alexnet
from saliency_jax.models import blur
from saliency_jax.models import dense
from saliency_jax.models import resnet
from saliency_jax.models import saliency_network
from saliency_jax.models import sampler
from saliency_jax.models import task

MODEL_NAMES = ("saliency_sampler", "uniform", "stn_affine", "stn_tps", "grid_estimator",
               "cam_crop", "deformable", "zoom_unzoom")
# Where the dense model's saliency comes from: a saliency network, the fixed prior (the KDE of
# the training boxes), both, or neither (the uniform baseline).
DENSE_SALIENCY = ("network", "prior", "both", "none")
TASK_NETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet_tiny", "alexnet",
             "inception_v3")
# The models with a saliency or localisation network (`LOCALISATION_ATTRIBUTES`), which a
# pretrained saliency backbone can be loaded into.
MODELS_WITH_SALIENCY_NET = ("saliency_sampler", "stn_affine", "stn_tps", "grid_estimator",
                            "zoom_unzoom")
# The task networks `load_pretrained` reads torchvision (or converted) weights into.
PRETRAINABLE_TASK_NETS = tuple(name for name in TASK_NETS if name != "inception_v3")
# A head's initialisation: "torch", PyTorch's default (the authors'), or "zero". The saliency
# network's zero head gives a uniform map, hence the identity grid, so that the sampler starts as
# uniform downsampling; the task network's zero classifier starts every class at chance.
HEAD_INITS = dense.HEAD_INITS
# Smallest input each task network accepts (AlexNet's strided stem and three pools; Inception-v3
# as torchvision checks).
_MIN_TASK_SIZE = {"alexnet": 63, "inception_v3": 75}


def _op_default(function, argument: str) -> Any:
  return inspect.signature(function).parameters[argument].default


# Every model field with its default. The sampler's numerics are the ops' own defaults (the
# authors' values), so that they are written down once, in `saliency_jax.ops`.
DEFAULTS = {
    "name": "saliency_sampler",
    "task_net": "resnet50",
    "task_size": 224,
    "low_res_size": 224,
    "saliency_backbone": "resnet18",
    "saliency_depth": 14,
    "grid_size": 31,
    "fwhm": float(_op_default(ops.attraction_grid, "fwhm")),
    "padding": int(_op_default(ops.attraction_grid, "padding")),
    "temperature": float(_op_default(ops.saliency_sample, "temperature")),
    "align_corners": bool(_op_default(ops.saliency_sample, "align_corners")),
    "max_magnification": 0.0,
    "antialias": bool(_op_default(ops.saliency_sample, "antialias")),
    "exact_identity": bool(_op_default(ops.saliency_sample, "exact_identity")),
    "axis_aligned": bool(_op_default(ops.attraction_grid, "axis_aligned")),
    "cap_at_source": False,
    "saliency_head_init": "torch",
    "task_head_init": "torch",
    "detail_prior": False,
    "explore": 0.0,
    "glimpses": 1,
    "dead_zone": 0.0,
    "saliency_cost": 0.0,
    "uniform_view": "off",
    "output_activation": None,
    "blur_min": 64,
    "dropout_rate": 0.5,
    "crop_fraction": 0.5,
    "tps_points_per_side": 4,
    "deformable_convs": 3,
    "dense_head": "segmentation",
    "segmentation_loss": "pixel",
    "segmentation_auxiliary": 0.0,
    "magnification_input": False,
    "warped_box_sizes": False,
    "saliency": "network",
    "saliency_supervision": 0.0,
    "saliency_supervision_mass": "equal",
    "warp_gradient": True,
    "dense_stages": ("layer2", "layer3", "layer4"),
    "out_stride": 8,
    "head_width": 64,
}


# The sampler's recipe: the model fields that, on top of `DEFAULTS` (the authors' layer), learned
# on the demo and the zoom suite without per-task tuning (README, Results). Anti-aliased
# sampling; the task network also reads the uniform view, trained on the mean of the two views'
# losses (the extras "view_outputs" and "view_weights"), whose gradient at the identity is
# uniform downsampling's, so that a gradient clip acts on it as on the baseline's; the exact
# identity, so that a uniform map samples as uniform downsampling; the map taught by the task
# network's evidence in the view it reads, weighted by its confidence (the extra "penalty"),
# and only by it: the grid is made from the map without the task loss's gradient.
# `SaliencySampler(task_net, saliency_net, **SAMPLER_RECIPE)` or
# `build_model({**fields, **SAMPLER_RECIPE}, ...)`; the trainer's configs/default.py adds
# `optimizer.clip_per_group`.
SAMPLER_RECIPE = {"antialias": True, "uniform_view": "mean", "exact_identity": True,
                  "align_corners": False, "saliency_supervision": 1.0, "warp_gradient": False}


# The fields that only the saliency sampler may set away from their defaults (their checks are in
# `CHECKS`); `compare_with_uniform`'s baseline resets them.
SAMPLER_ONLY = ("axis_aligned", "cap_at_source", "detail_prior", "explore", "glimpses",
                "dead_zone", "saliency_cost", "uniform_view", "saliency_supervision",
                "warp_gradient")


def default_model_config() -> ml_collections.ConfigDict:
  """`DEFAULTS` as a locked `ConfigDict`: the schema of `build_model`'s fields (see there)."""
  fields = dict(DEFAULTS)
  # An optional string: a plain None would let any type replace it.
  fields["output_activation"] = config_dict.placeholder(str)
  config = ml_collections.ConfigDict(fields)
  config.lock()
  return config


def _min_task_size(c) -> int:
  return _MIN_TASK_SIZE.get(c.task_net, 32)


def _max_deformable_convs(task_net: str) -> int:
  if task_net == "alexnet":
    return len(alexnet._CONVS)  # pylint: disable=protected-access
  spec = resnet.SPECS[task_net]
  return sum(spec.stage_sizes) * resnet.BLOCKS[spec.block].num_3x3


def _positive(value: float) -> bool:
  return math.isfinite(value) and value > 0


def _sampler_amount(field: str, why: str) -> schema.Check:
  """A finite number >= 0 that only the saliency sampler may set above 0."""
  return schema.Check(
      field, lambda c: math.isfinite(getattr(c, field)) and getattr(c, field) >= 0
      and (getattr(c, field) == 0 or c.name == "saliency_sampler"),
      lambda c: (f"0 for {c.name}: only saliency_sampler {why}" if getattr(c, field) > 0
                 else "a finite number >= 0"))


CHECKS = (
    schema.Check("name", lambda c: c.name in MODEL_NAMES, f"one of {MODEL_NAMES}"),
    schema.Check("task_net", lambda c: c.task_net in TASK_NETS, f"one of {TASK_NETS}"),
    schema.Check("saliency_backbone", lambda c: c.saliency_backbone in saliency_network.BACKBONES,
                 f"one of {saliency_network.BACKBONES}"),
    schema.Check("saliency_depth", lambda c: c.saliency_depth in saliency_network.DEPTHS,
                 f"one of {tuple(saliency_network.DEPTHS)}"),
    schema.Check("output_activation", lambda c: c.output_activation in task.OUTPUT_ACTIVATIONS,
                 f"one of {task.OUTPUT_ACTIVATIONS}"),
    schema.Check("task_size", lambda c: c.task_size >= _min_task_size(c),
                 lambda c: f"an int >= {_min_task_size(c)} (the smallest input of {c.task_net})"),
    schema.Check("low_res_size", lambda c: c.low_res_size >= 32, "an int >= 32"),
    schema.Check("grid_size", lambda c: c.grid_size >= 2, "an int >= 2"),
    schema.Check("padding", lambda c: c.padding >= 0, "an int >= 0"),
    schema.Check("blur_min", lambda c: 1 <= c.blur_min <= blur.REFERENCE_SIZE,
                 f"an int in [1, {blur.REFERENCE_SIZE}] (it is given at task size "
                 f"{blur.REFERENCE_SIZE} and scaled to task_size)"),
    schema.Check("tps_points_per_side", lambda c: c.tps_points_per_side >= 2, "an int >= 2"),
    schema.Check("deformable_convs", lambda c: c.deformable_convs >= 1, "an int >= 1"),
    schema.Check("fwhm", lambda c: _positive(c.fwhm), "a finite number > 0"),
    schema.Check("temperature", lambda c: _positive(c.temperature), "a finite number > 0"),
    schema.Check("max_magnification",
                 lambda c: c.max_magnification == 0 or (math.isfinite(c.max_magnification)
                                                        and c.max_magnification >= 1),
                 "0 (no cap) or a finite number >= 1"),
    schema.Check("axis_aligned",
                 lambda c: not c.axis_aligned or c.name in ("saliency_sampler", "zoom_unzoom"),
                 lambda c: f"False for {c.name}: only the attraction grid of saliency_sampler and "
                           f"zoom_unzoom has an axis-aligned form"),
    schema.Check("cap_at_source",
                 lambda c: not c.cap_at_source or (c.name == "saliency_sampler"
                                                   and c.max_magnification == 0),
                 "False unless the model is saliency_sampler with max_magnification 0 (the cap "
                 "is then the source's resolution)"),
    schema.Check("detail_prior",
                 lambda c: not c.detail_prior or c.name in ("saliency_sampler", "zoom_unzoom"),
                 lambda c: f"False for {c.name}: only saliency_sampler and zoom_unzoom have a "
                           f"detail prior"),
    _sampler_amount("explore", "explores"),
    schema.Check("glimpses", lambda c: c.glimpses >= 1, "an int >= 1"),
    schema.Check("glimpses",
                 lambda c: c.glimpses == 1 or (c.name == "saliency_sampler" and c.explore > 0
                                               and c.output_activation is None),
                 "1 unless the model is saliency_sampler with explore > 0 and logits outputs "
                 "(output_activation None): the views are the exploration's"),
    _sampler_amount("dead_zone", "has saliency logits"),
    _sampler_amount("saliency_cost", "has a saliency map to charge"),
    schema.Check("uniform_view", lambda c: c.uniform_view in sampler.UNIFORM_VIEWS,
                 f"one of {sampler.UNIFORM_VIEWS}"),
    schema.Check("uniform_view",
                 lambda c: c.uniform_view == "off" or (
                     c.name == "saliency_sampler" and c.glimpses == 1
                     and c.output_activation is None),
                 "'off' unless the model is saliency_sampler with one glimpse and logits outputs "
                 "(output_activation None): the two views' class probabilities are pooled"),
    schema.Check("saliency_head_init", lambda c: c.saliency_head_init in HEAD_INITS,
                 f"one of {HEAD_INITS}"),
    schema.Check("task_head_init", lambda c: c.task_head_init in HEAD_INITS,
                 f"one of {HEAD_INITS}"),
    schema.Check("dropout_rate", lambda c: 0 <= c.dropout_rate <= 1, "a number in [0, 1]"),
    schema.Check("crop_fraction", lambda c: 0 < c.crop_fraction <= 1, "a number in (0, 1]"),
    schema.Check("task_net",
                 lambda c: not (c.name == "deformable" and c.task_net == "inception_v3"),
                 "a ResNet or alexnet for the deformable baseline"),
    schema.Check("deformable_convs",
                 lambda c: c.name != "deformable" or c.deformable_convs <= _max_deformable_convs(
                     c.task_net),
                 lambda c: f"at most {_max_deformable_convs(c.task_net)}, the 3x3 convolutions "
                           f"of {c.task_net}"),
    schema.Check("dense_head", lambda c: c.dense_head in dense.HEADS, f"one of {dense.HEADS}"),
    schema.Check("segmentation_loss", lambda c: c.segmentation_loss in dense.SEGMENTATION_LOSSES,
                 f"one of {dense.SEGMENTATION_LOSSES}"),
    schema.Check("segmentation_auxiliary",
                 lambda c: math.isfinite(c.segmentation_auxiliary) and (
                     c.segmentation_auxiliary == 0 or (c.segmentation_auxiliary > 0 and (
                         c.name == "zoom_unzoom" and c.dense_head == "detection"))),
                 "a finite number >= 0, above 0 only for zoom_unzoom with dense_head "
                 "'detection' (an auxiliary segmentation output of its head)"),
    schema.Check("magnification_input",
                 lambda c: isinstance(c.magnification_input, bool) and (
                     not c.magnification_input or c.name == "zoom_unzoom"),
                 "False, or True only for zoom_unzoom (its head reads the warp's magnification)"),
    schema.Check("warped_box_sizes",
                 lambda c: isinstance(c.warped_box_sizes, bool) and (
                     not c.warped_box_sizes or (c.name == "zoom_unzoom"
                                                and c.dense_head == "detection")),
                 "False, or True only for zoom_unzoom with dense_head 'detection' (its head's "
                 "box sizes)"),
    schema.Check("saliency", lambda c: c.saliency in DENSE_SALIENCY, f"one of {DENSE_SALIENCY}"),
    schema.Check("saliency_supervision",
                 lambda c: math.isfinite(c.saliency_supervision) and (
                     c.saliency_supervision == 0 or (c.saliency_supervision > 0 and (
                         (c.name == "zoom_unzoom" and c.saliency in ("network", "both"))
                         or (c.name == "saliency_sampler" and c.glimpses == 1
                             and c.output_activation is None)))),
                 "a finite number >= 0, above 0 only for zoom_unzoom with a saliency network "
                 "(saliency 'network' or 'both': towards the boxes' density) or "
                 "saliency_sampler with one glimpse and logits outputs (towards the task "
                 "network's evidence): it trains the network's map"),
    schema.Check("saliency_supervision_mass",
                 lambda c: c.saliency_supervision_mass in priors.BOX_MASSES and (
                     c.saliency_supervision_mass == "equal" or (
                         c.name == "zoom_unzoom" and c.saliency_supervision > 0)),
                 f"one of {priors.BOX_MASSES}, other than 'equal' only for zoom_unzoom with "
                 f"saliency_supervision > 0 (how its box target shares the mass)"),
    schema.Check("warp_gradient",
                 lambda c: isinstance(c.warp_gradient, bool) and (
                     c.warp_gradient or (c.name in ("saliency_sampler", "zoom_unzoom")
                                         and c.saliency_supervision > 0)),
                 "True, or False only for saliency_sampler or zoom_unzoom with "
                 "saliency_supervision > 0 (the map then learns from the supervision alone)"),
    schema.Check("dense_stages",
                 lambda c: len(c.dense_stages) > 0 and set(c.dense_stages) <= set(resnet.STAGES),
                 f"a non-empty tuple of ResNet stages {resnet.STAGES}"),
    schema.Check("out_stride", lambda c: c.out_stride >= 1, "an int >= 1"),
    schema.Check("head_width", lambda c: c.head_width >= 1, "an int >= 1"),
    schema.Check("task_net", lambda c: c.name != "zoom_unzoom" or c.task_net in resnet.SPECS,
                 "a ResNet for zoom_unzoom, whose stages it unwarps"),
    schema.Check("task_net", lambda c: not (c.name == "cam_crop" and c.task_net == "alexnet"),
                 "a network ending in global pooling and one linear layer for cam_crop (a ResNet "
                 "or inception_v3)"),
)
"""The model fields' ranges and relations: rows of `saliency_jax.schema.Check`."""


def parse_model_config(model_config: Mapping[str, Any] | ml_collections.ConfigDict, *,
                    prefix: str = "model_config") -> dict[str, Any]:
  """`model_config` with defaults filled in and every value checked (see `factory.build_model`).

  Raises:
    ValueError: naming the first unknown, mistyped or out-of-range field (as `prefix.FIELD`).
  """
  config = schema.merge(default_model_config(), model_config, prefix=prefix)
  schema.check(config, CHECKS, prefix=prefix)
  return config.to_dict()
