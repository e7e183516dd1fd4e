"""Building models from a config, their learning-rate groups, and pretrained weights.

`build_model` is what the trainer calls; every model it returns has the same interface:
`model(images, *, blur_key=None) -> (outputs, extras)` (see `saliency_jax.models.task` for value
conventions), `model.train()` / `model.eval()` switch BatchNorm and dropout, the task network is
`model.task_net`, and a saliency or localisation network, when there is one, is
`model.saliency_net` or `model.localisation_net` with a `backbone` and a `head`.
"""

from collections.abc import Mapping
import inspect
import math
import os
from typing import Any

import jax
import ml_collections
from ml_collections import config_dict
import numpy as np
from flax import nnx

from saliency_jax import ops
from saliency_jax import schema
from saliency_jax.models import alexnet
from saliency_jax.models import baselines
from saliency_jax.models import blur
from saliency_jax.models import dense
from saliency_jax.models import inception
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
# "torch": PyTorch's default initialisation of the head (the authors'); "zero": a zero head,
# whose uniform map gives the identity grid, so that the sampler starts as uniform downsampling.
SALIENCY_HEAD_INITS = ("torch", "zero")
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
    "saliency_head_init": "torch",
    "output_activation": None,
    "blur_min": 64,
    "dropout_rate": 0.5,
    "crop_fraction": 0.5,
    "tps_points_per_side": 4,
    "deformable_convs": 3,
    "dense_head": "segmentation",
    "segmentation_loss": "pixel",
    "saliency": "network",
    "dense_stages": ("layer2", "layer3", "layer4"),
    "out_stride": 8,
    "head_width": 64,
}


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
    schema.Check("saliency_head_init", lambda c: c.saliency_head_init in SALIENCY_HEAD_INITS,
                 f"one of {SALIENCY_HEAD_INITS}"),
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
    schema.Check("saliency", lambda c: c.saliency in DENSE_SALIENCY, f"one of {DENSE_SALIENCY}"),
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


def validate_config(model_config: Mapping[str, Any] | ml_collections.ConfigDict, *,
                    prefix: str = "model_config") -> dict[str, Any]:
  """`model_config` with defaults filled in and every value checked (see `build_model`).

  Raises:
    ValueError: naming the first unknown, mistyped or out-of-range field (as `prefix.FIELD`).
  """
  config = schema.merge(default_model_config(), model_config, prefix=prefix)
  schema.check(config, CHECKS, prefix=prefix)
  return config.to_dict()


def build_task_net(name: str, *, num_outputs: int, deformable_convs: int = 0,
                   dropout_rate: float = 0.5, rngs: nnx.Rngs) -> nnx.Module:
  """The task network `name` (one of `TASK_NETS`) with `num_outputs` outputs."""
  if name in resnet.SPECS:
    return resnet.build_resnet(name, num_classes=num_outputs, deformable_convs=deformable_convs,
                         rngs=rngs)
  if name == "alexnet":
    return alexnet.AlexNet(num_classes=num_outputs, dropout_rate=dropout_rate,
                           deformable_convs=deformable_convs, rngs=rngs)
  if name == "inception_v3":
    if deformable_convs:
      raise ValueError("deformable convolutions are not supported in inception_v3.")
    return inception.InceptionV3(num_classes=num_outputs, dropout_rate=dropout_rate, rngs=rngs)
  raise ValueError(f"task_net must be one of {TASK_NETS}; got {name!r}.")


def build_model(model_config: Mapping[str, Any], *, num_outputs: int, rngs: nnx.Rngs,
                prior: jax.Array | None = None) -> nnx.Module:
  """Builds the model a config describes.

  Fields of `model_config` (a dict or `ml_collections.ConfigDict`; missing ones take the default
  in brackets, unknown ones are an error):
    name: "saliency_sampler", "uniform" (plain downsampling), "stn_affine", "stn_tps",
      "grid_estimator", "cam_crop" or "deformable" ["saliency_sampler"].
    task_net: "resnet18", "resnet34", "resnet50", "resnet101", "resnet_tiny", "alexnet" or
      "inception_v3" ["resnet50"].
    task_size: side of the task network's input [224]; at least 63 for AlexNet, 75 for
      Inception-v3, 32 otherwise.
    low_res_size: side of the view the saliency / localisation network sees [224].
    saliency_backbone: "resnet18" or "resnet_tiny", also the localisation networks' ["resnet18"].
    saliency_depth: 6, 10 or 14 layers of the backbone [14].
    grid_size: side of the saliency grid (and of the grid estimator's grid) [31].
    fwhm, padding, temperature: of the attraction grid and softmax [13.0, 30, 1.0].
    align_corners: `grid_sample` convention of every sampling model [True].
    max_magnification: the sampler's cap on its local magnification relative to uniform
      sampling, 0 for none [0.0].
    antialias: the sampler averages each sample's footprint where its warp compresses [False].
    saliency_head_init: "torch" (PyTorch's default, the authors') or "zero" (the sampler starts
      at the identity grid, i.e. as uniform downsampling) ["torch"].
    output_activation: None or "sigmoid" (gaze) [None].
    blur_min: smallest blur size of the warm-up at task size 224, scaled proportionally to
      `task_size` [64].
    dropout_rate: dropout of AlexNet and Inception-v3 in training mode [0.5].
    crop_fraction: side of the CAM crop as a fraction of the image side [0.5].
    tps_points_per_side: the thin-plate spline's control lattice is n x n [4].
    deformable_convs: how many of the task network's last convolutions are deformable in the
      "deformable" baseline (the paper: 3) [3].
    The dense model "zoom_unzoom" (`dense.ZoomUnzoom`, a ResNet `task_net`; `grid_size`,
    `fwhm`, `padding`, `temperature`, `max_magnification`, `antialias` and the saliency
    network's fields as above):
    dense_head: "segmentation" or "detection" ["segmentation"].
    segmentation_loss: the segmentation head's training loss: "pixel" (mean pixel
      cross-entropy) or "class_balanced" (the mean over the classes present in each image of
      their mean pixel cross-entropy) ["pixel"]; see `train.dense_metrics`. Evaluation
      reports the pixel loss either way, so that runs with either loss compare.
    saliency: "network", "prior" (fixed: `prior`), "both" or "none" (the uniform baseline)
      ["network"].
    dense_stages: the task network's stages unwarped and fused [("layer2", "layer3", "layer4")].
    out_stride: stride of the dense outputs on the source image [8].
    head_width: channels of the fused map [64].

  Args:
    model_config: the fields above.
    num_outputs: classes (logits), regression outputs, or a dense model's object classes.
    rngs: `nnx.Rngs` with "params" (and "dropout" for AlexNet / Inception-v3) streams.
    prior: `[grid_size, grid_size]` fixed saliency of a "zoom_unzoom" model with saliency
      "prior" or "both" (e.g. `ops.kde_saliency` of the training boxes, exponentiated).

  Returns:
    An `nnx.Module`, called as `model(images, *, blur_key=None) -> (outputs, extras)`.

  Raises:
    ValueError: naming the field, what is allowed and what was given.
  """
  c = validate_config(model_config)
  if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
    raise ValueError(f"num_outputs must be a positive int; got {num_outputs!r}.")
  name = c["name"]
  if name == "zoom_unzoom":
    return _build_dense(c, num_classes=num_outputs, rngs=rngs, prior=prior)
  task_size = c["task_size"]
  common = {"task_size": task_size, "blur_min": blur.scaled_min_size(task_size, c["blur_min"]),
            "output_activation": c["output_activation"]}
  warping = {**common, "low_res_size": c["low_res_size"], "align_corners": c["align_corners"]}
  backbone = {"backbone": c["saliency_backbone"], "depth": c["saliency_depth"]}
  task_net = build_task_net(
      c["task_net"], num_outputs=num_outputs,
      deformable_convs=c["deformable_convs"] if name == "deformable" else 0,
      dropout_rate=c["dropout_rate"], rngs=rngs)

  if name == "saliency_sampler":
    return sampler.SaliencySampler(
        task_net, _saliency_net(c, rngs), fwhm=c["fwhm"], padding=c["padding"],
        temperature=c["temperature"], max_magnification=c["max_magnification"] or None,
        antialias=c["antialias"], **warping)
  if name in ("uniform", "deformable"):
    return baselines.UniformSampler(task_net, **common)
  if name == "stn_affine":
    return baselines.STNAffine(task_net, baselines.affine_localisation(rngs=rngs, **backbone),
                               **warping)
  if name == "stn_tps":
    n = c["tps_points_per_side"]
    localisation = baselines.tps_localisation(points_per_side=n, rngs=rngs, **backbone)
    return baselines.STNThinPlateSpline(task_net, localisation, points_per_side=n, **warping)
  if name == "grid_estimator":
    localisation = baselines.grid_localisation(grid_size=c["grid_size"], rngs=rngs, **backbone)
    return baselines.GridEstimator(task_net, localisation, **warping)
  # cam_crop
  return baselines.CAMCrop(task_net, crop_fraction=c["crop_fraction"],
                           align_corners=c["align_corners"], **common)


def _saliency_net(c: Mapping[str, Any], rngs: nnx.Rngs) -> saliency_network.SaliencyNetwork:
  head = ({"head_init": nnx.initializers.zeros_init(),
           "head_bias_init": nnx.initializers.zeros_init()}
          if c["saliency_head_init"] == "zero" else {})
  return saliency_network.SaliencyNetwork(
      grid_size=c["grid_size"], backbone=c["saliency_backbone"], depth=c["saliency_depth"],
      rngs=rngs, **head)


def _build_dense(c: Mapping[str, Any], *, num_classes: int, rngs: nnx.Rngs,
                 prior: jax.Array | None) -> dense.ZoomUnzoom:
  saliency = c["saliency"]
  wants_prior = saliency in ("prior", "both")
  if wants_prior and prior is None:
    raise ValueError(f"model_config.saliency {saliency!r} needs prior=, the fixed saliency map "
                     f"(e.g. the KDE of the training boxes); got None.")
  if prior is not None and np.shape(prior) != (c["grid_size"],) * 2:
    raise ValueError(f"prior must be a [grid_size, grid_size] = {[c['grid_size']] * 2} map; got "
                     f"shape {list(np.shape(prior))}.")
  backbone = resnet.build_resnet(c["task_net"], num_classes=None, rngs=rngs)
  return dense.ZoomUnzoom(
      backbone, _saliency_net(c, rngs) if saliency in ("network", "both") else None,
      prior=prior if wants_prior else None, num_classes=num_classes, head=c["dense_head"],
      stages=tuple(c["dense_stages"]), task_size=c["task_size"],
      low_res_size=c["low_res_size"], out_stride=c["out_stride"], head_width=c["head_width"],
      temperature=c["temperature"], fwhm=c["fwhm"], padding=c["padding"],
      antialias=c["antialias"], max_magnification=c["max_magnification"] or None, rngs=rngs)


# ---------------------------------------------------------------------------------------------
# Learning-rate groups.

LOCALISATION_ATTRIBUTES = ("saliency_net", "localisation_net")


def _key_name(key) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def param_label(path: tuple[str, ...]) -> str:
  """The group of the parameter at `path` (attribute names from the model's root)."""
  if len(path) >= 2 and path[0] in LOCALISATION_ATTRIBUTES:
    return "saliency_backbone" if path[1] == "backbone" else "saliency_head"
  return "task"


def param_labels(params: nnx.State) -> Any:
  """Labels every leaf of `params` with its learning-rate group.

  "saliency_backbone" for the saliency / localisation network's ResNet, "saliency_head" for its
  head, "task" for everything else (the authors' multipliers 0.001 / 0.01 / 1). Usable as the
  `param_labels` of `optax.multi_transform`.

  Args:
    params: `nnx.state(model, nnx.Param)` or any pytree with the model's attribute paths
      (e.g. `nnx.to_pure_dict` of it).

  Returns:
    A pytree of the same structure with a string at every leaf.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: param_label(tuple(_key_name(k) for k in path)), params)


# ---------------------------------------------------------------------------------------------
# Pretrained weights.


def _classifier(net: nnx.Module) -> tuple[str, nnx.Linear] | None:
  for name in ("fc", "fc8"):
    layer = getattr(net, name, None)
    if isinstance(layer, nnx.Linear):
      return name, layer
  return None


def _convert():
  # Imported on use, so that `python -m saliency_jax.models.convert` does not find the module
  # already imported by the package (runpy warns about that).
  from saliency_jax.models import convert  # pylint: disable=import-outside-toplevel
  return convert


def _load_task_net(net: nnx.Module, path: str | os.PathLike) -> None:
  path = os.fspath(path)
  if not isinstance(net, (resnet.ResNet, alexnet.AlexNet)):
    raise ValueError(f"pretrained weights can be loaded into a ResNet or AlexNet; the network is "
                     f"{type(net).__name__}.")
  if path.endswith(".npz"):
    skip = ()
    classifier = _classifier(net)
    if classifier is not None:
      name, layer = classifier
      with np.load(path) as data:
        stored = data.get(f"{name}/kernel")
        if stored is None or stored.shape != tuple(layer.kernel.get_value().shape):
          skip = (name,)
    _convert().load_converted(net, path, skip=skip)
  else:
    _convert().load_torchvision(net, path, load_fc=None)


def load_pretrained(model: nnx.Module, *, task_net: str | os.PathLike | None = None,
                    saliency_backbone: str | os.PathLike | None = None) -> None:
  """Fills a model's task network and/or saliency backbone with pretrained weights, in place.

  Args:
    model: a model from `build_model`.
    task_net: a torchvision ResNet/AlexNet checkpoint (`.pth`, `.safetensors`) or a converted
      `.npz` for `model.task_net`. The final classifier is copied only when its class count
      matches the model's (otherwise it keeps its initialisation).
    saliency_backbone: the same for the saliency (or localisation) network's truncated ResNet;
      the checkpoint's deeper stages and classifier are ignored.

  Raises:
    ValueError: when the model has no such network, or the checkpoint is another architecture
      or lacks keys.
  """
  if task_net is not None:
    _load_task_net(model.task_net, task_net)
  if saliency_backbone is not None:
    owner = next((getattr(model, a) for a in LOCALISATION_ATTRIBUTES if hasattr(model, a)), None)
    if owner is None:
      raise ValueError(f"{type(model).__name__} has no saliency or localisation network to load "
                       f"a saliency_backbone into.")
    backbone = owner.backbone
    convert = _convert()
    if os.fspath(saliency_backbone).endswith(".npz"):
      convert.load_converted(backbone, saliency_backbone)
    else:
      convert.load_resnet(backbone, convert.read_state_dict(saliency_backbone), load_fc=False)
