"""Building models from a config: the task networks and every model of `MODEL_NAMES`.

`build_model` is what the trainer calls; every model it returns has the same interface:
`model(images, *, blur_key=None) -> (outputs, extras)` (see `saliency_jax.models.task` for value
conventions), `model.train()` / `model.eval()` switch BatchNorm and dropout, the task network is
`model.task_net`, and a saliency or localisation network, when there is one, is
`model.saliency_net` or `model.localisation_net` with a `backbone` and a `head`
(`pretrained.LOCALISATION_ATTRIBUTES`). The fields and their defaults: `model_config`.
"""

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax.models import alexnet
from saliency_jax.models import baselines
from saliency_jax.models import blur
from saliency_jax.models import dense
from saliency_jax.models import inception
from saliency_jax.models import resnet
from saliency_jax.models import saliency_network
from saliency_jax.models import sampler
from saliency_jax.models.model_config import HEAD_INITS
from saliency_jax.models.model_config import TASK_NETS
from saliency_jax.models.model_config import parse_model_config


def build_task_net(name: str, *, num_outputs: int, deformable_convs: int = 0,
                   dropout_rate: float = 0.5, head_init: str = "torch",
                   rngs: nnx.Rngs) -> nnx.Module:
  """The task network `name` (one of `TASK_NETS`) with `num_outputs` outputs; `head_init`
  "zero" zeroes its classifier (the last linear layer), so that every output starts at 0."""
  if head_init not in HEAD_INITS:
    raise ValueError(f"head_init must be one of {HEAD_INITS}; got {head_init!r}.")
  if name in resnet.SPECS:
    net = resnet.build_resnet(name, num_classes=num_outputs, deformable_convs=deformable_convs,
                              rngs=rngs)
  elif name == "alexnet":
    net = alexnet.AlexNet(num_classes=num_outputs, dropout_rate=dropout_rate,
                          deformable_convs=deformable_convs, rngs=rngs)
  elif name == "inception_v3":
    if deformable_convs:
      raise ValueError("deformable convolutions are not supported in inception_v3.")
    net = inception.InceptionV3(num_classes=num_outputs, dropout_rate=dropout_rate, rngs=rngs)
  else:
    raise ValueError(f"task_net must be one of {TASK_NETS}; got {name!r}.")
  if head_init == "zero":
    classifier = net.fc8 if name == "alexnet" else net.fc
    for variable in (classifier.kernel, classifier.bias):
      variable[...] = jnp.zeros_like(variable[...])
  return net


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
    exact_identity: the sampler's grid at a uniform map is exactly the sampling convention's
      identity, so that it then samples as uniform downsampling (`ops.saliency_sample`) [False].
    axis_aligned: the attraction grid's axis-aligned form (LZU's and FOVEA's: x from the
      saliency's column marginal, y from its row marginal), which the dense model's unwarp
      inverts exactly and fast; sampler and dense model only [False].
    saliency_head_init: "torch" (PyTorch's default, the authors') or "zero" (the sampler starts
      at the identity grid, i.e. as uniform downsampling) ["torch"].
    task_head_init: "torch" or "zero": the task network's classifier (its last linear layer;
      the dense model's last convolution) starts at zero, every class at chance ["torch"].
    cap_at_source: the sampler's magnification cap is the source's own resolution
      (`SaliencySampler`); needs max_magnification 0; sampler only [False].
    detail_prior: the saliency is the product of the network's map and
      `ops.detail_saliency` (the detail uniform downsampling would lose); sampler and dense
      model only [False].
    explore: height of the sampler's exploration bump in training mode (`SaliencySampler`);
      0 for none; sampler only [0.0].
    glimpses: views per example in training mode (`SaliencySampler`): > 1 needs explore > 0
      and logits outputs; sampler only [1].
    dead_zone: the sampler's saliency logits within this of their mean count as the mean
      (soft-thresholded, with the gradient passed straight through); 0 for none; sampler
      only [0.0].
    saliency_cost: nats of training loss charged per nat of the sampler's map's information
      (its KL divergence from the uniform map, `ops.saliency_information`), so that the warp
      moves only where it pays; 0 for none; sampler only [0.0].
    uniform_view: "off", or the sampler's task network also reads the uniform view and the two
      views' class probabilities are pooled, trained on the pooled outputs ("pooled") or each
      view on its own loss ("each", their sum; "mean", their mean) (`SaliencySampler`);
      sampler with logits only ["off"].
    saliency_supervision: nats of training loss per nat of the KL divergence of the sampler's
      map from the task network's evidence in the view it reads, unwarped (`SaliencySampler`);
      sampler with logits and one glimpse only; for "zoom_unzoom", see below [0.0].
    warp_gradient: False: the sampler's grid is made from its map without gradient, so that
      the saliency network learns from `saliency_supervision` alone (`SaliencySampler`);
      needs saliency_supervision > 0; for "zoom_unzoom", see below [True].
    output_activation: None or "sigmoid" (gaze) [None].
    blur_min: smallest blur size of the warm-up at task size 224, scaled proportionally to
      `task_size` [64].
    dropout_rate: dropout of AlexNet and Inception-v3 in training mode [0.5].
    crop_fraction: side of the CAM crop as a fraction of the image side [0.5].
    tps_points_per_side: the thin-plate spline's control lattice is n x n [4].
    deformable_convs: how many of the task network's last convolutions are deformable in the
      "deformable" baseline (the paper: 3) [3].
    The dense model "zoom_unzoom" (`dense.ZoomUnzoom`, a ResNet `task_net`; `grid_size`,
    `fwhm`, `padding`, `temperature`, `max_magnification`, `antialias`, `axis_aligned` and the
    saliency
    network's fields as above):
    dense_head: "segmentation" or "detection" ["segmentation"].
    segmentation_loss: the segmentation head's training loss: "pixel" (mean pixel
      cross-entropy), "class_balanced" (the mean over the classes present in each image of
      their mean pixel cross-entropy) or "object_balanced" (the same, with each object on its
      own, so that a small object weighs as much as a large one) ["pixel"]; see
      `train.dense_metrics`. Evaluation reports the pixel loss whichever it is, so that runs
      with different losses compare.
    segmentation_auxiliary: nats of training loss per nat of `segmentation_loss` on an
      auxiliary segmentation output of the detection head (`dense.ZoomUnzoom`), which needs the
      images' masks (pixels without a label, `IGNORE`, are left out); 0: none [0]. A
      training-loss term, as `saliency_supervision`.
    magnification_input: the head also reads the warp's log local magnification in the
      outputs' frame (`dense.ZoomUnzoom`), so that it can tell a box's size in the source from
      its size in the warped image [False].
    warped_box_sizes: the detection head predicts each box's size in the warped image and the
      grid brings it into the source (`dense.source_box_sizes`) [False].
    saliency: "network", "prior" (fixed: `prior`), "both" or "none" (the uniform baseline,
      unless `detail_prior`) ["network"].
    saliency_supervision: nats of training loss per nat of the KL divergence of the network's
      map from the kernel density of the image's own boxes (`ops.kde_saliency`), so that the
      saliency network learns to find the objects in the low-resolution view; 0 trains it
      through the warp alone [0]. A training-loss term (`train.dense_metrics`), not a model field.
    saliency_supervision_mass: how that density shares an image's mass among its boxes
      (`ops.kde_saliency`'s `box_mass`): "equal", or "inverse_area", which asks the warp to
      magnify the small objects and leave the large near uniform ["equal"]. An option of that
      training-loss term, as `saliency_supervision`.
    warp_gradient: False: the grid is made from the network's map without gradient, so that
      the saliency network learns from `saliency_supervision` alone (`dense.ZoomUnzoom`);
      needs saliency_supervision > 0 [True].
    (`detail_prior` as above; with saliency "none", the detail prior alone.)
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
  c = parse_model_config(model_config)
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
      dropout_rate=c["dropout_rate"], head_init=c["task_head_init"], rngs=rngs)

  if name == "saliency_sampler":
    return sampler.SaliencySampler(
        task_net, _saliency_net(c, rngs), fwhm=c["fwhm"], padding=c["padding"],
        temperature=c["temperature"], max_magnification=c["max_magnification"] or None,
        antialias=c["antialias"], exact_identity=c["exact_identity"],
        axis_aligned=c["axis_aligned"], cap_at_source=c["cap_at_source"],
        detail_prior=c["detail_prior"], explore=c["explore"], glimpses=c["glimpses"],
        dead_zone=c["dead_zone"],
        saliency_cost=c["saliency_cost"], uniform_view=c["uniform_view"],
        saliency_supervision=c["saliency_supervision"], warp_gradient=c["warp_gradient"],
        rngs=rngs, **warping)
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
      antialias=c["antialias"], max_magnification=c["max_magnification"] or None,
      axis_aligned=c["axis_aligned"], detail_prior=c["detail_prior"],
      grid_size=c["grid_size"], warp_gradient=c["warp_gradient"],
      head_init=c["task_head_init"], segmentation_auxiliary=c["segmentation_auxiliary"] > 0,
      magnification_input=c["magnification_input"], warped_box_sizes=c["warped_box_sizes"],
      rngs=rngs)
