"""A model's learning-rate groups, and loading pretrained weights into it.

The groups are the authors': "saliency_backbone" (the saliency or localisation network's
truncated ResNet), "saliency_head" (its head) and "task" (everything else), trained at 0.001,
0.01 and 1 times the base rate by default. Weights come from torchvision checkpoints (`.pth`,
`.safetensors`) or converted `.npz` files (`saliency_jax.models.convert`).
"""

import os
from typing import Any

import jax
import numpy as np
from flax import nnx

from saliency_jax.models import alexnet
from saliency_jax.models import resnet

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
