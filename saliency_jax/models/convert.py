"""torchvision checkpoints -> this package's NNX modules (ResNet family and AlexNet).

Library:
  `load_torchvision(model, source, *, load_fc=None)` fills a `ResNet` or `AlexNet` (including a
  truncated ResNet, such as a saliency backbone, and one built abstractly with `nnx.eval_shape`)
  from a torchvision state_dict (a mapping of arrays, or a `.pth`/`.safetensors` path).
  `convert_file(source, destination, *, arch=None)` writes the converted weights as `.npz`,
  which `load_converted` (and `saliency_jax.models.load_pretrained`) read back.

Command (on a machine where the checkpoint has been downloaded; nothing is fetched here):
  python -m saliency_jax.models.convert --input resnet18-f37072fd.pth --output resnet18.npz

Layouts: convolution kernels `[out, in, kh, kw]` -> `[kh, kw, in, out]`; linear weights
`[out, in]` -> `[in, out]`; BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var
(`num_batches_tracked` is dropped). AlexNet's first linear layer reads a flattened `[C, 6, 6]`
map in PyTorch and a flattened `[6, 6, C]` map here, so its input rows are permuted. Offset
convolutions of deformable layers have no torchvision counterpart and keep their zero
initialisation.

Errors name the architecture the checkpoint holds, the model's, and the missing, unexpected or
mis-shaped keys.
"""

import argparse
from collections.abc import Mapping
import os
import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

from saliency_jax.models import alexnet as alexnet_lib
from saliency_jax.models import resnet as resnet_lib
from saliency_jax.models import torch_io

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "alexnet")
_VARIABLE_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias",
                   "mean": "running_mean", "var": "running_var"}
_ALEXNET_MODULES = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6",
                    "conv4": "features.8", "conv5": "features.10", "fc6": "classifier.1",
                    "fc7": "classifier.4", "fc8": "classifier.6"}
_DOWNSAMPLE_MODULES = {"conv": "0", "bn": "1"}


# ---------------------------------------------------------------------------------------------
# Recognising architectures.


def describe_resnet(state_dict: Mapping[str, np.ndarray]) -> dict | None:
  """The ResNet a torchvision state_dict holds, or None when it is not a ResNet.

  Returns:
    `{"block": "basic" | "bottleneck", "stage_sizes": (...), "width": int,
    "num_classes": int | None}`.
  """
  if "conv1.weight" not in state_dict or "layer1.0.conv1.weight" not in state_dict:
    return None
  stage_sizes = []
  for stage in resnet_lib.STAGES:
    blocks = {int(k.split(".")[1]) for k in state_dict if k.startswith(f"{stage}.")}
    if not blocks:
      break
    stage_sizes.append(max(blocks) + 1)
  fc = state_dict.get("fc.weight")
  return {
      "block": "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic",
      "stage_sizes": tuple(stage_sizes),
      "width": int(state_dict["conv1.weight"].shape[0]),
      "num_classes": None if fc is None else int(fc.shape[0]),
  }


def _describe_model(model: resnet_lib.ResNet) -> dict:
  first = getattr(model, model.stage_names[0])[0]
  return {
      "block": "bottleneck" if isinstance(first, resnet_lib.Bottleneck) else "basic",
      "stage_sizes": tuple(len(getattr(model, name)) for name in model.stage_names),
      "width": int(model.conv1.out_features),
      "num_classes": None if model.fc is None else int(model.fc.out_features),
  }


def _name_of(description: dict) -> str:
  stages = description["stage_sizes"]
  for name, spec in resnet_lib.SPECS.items():
    if (spec.block, spec.width) == (description["block"], description["width"]):
      if spec.stage_sizes == stages:
        return name
      if spec.stage_sizes[:len(stages)] == stages:
        return f"{name} truncated to {len(stages)} stages"
  return "a ResNet variant"


def _format(description: dict) -> str:
  classes = description["num_classes"]
  head = "no classifier" if classes is None else f"{classes} classes"
  return (f"{_name_of(description)} ({description['block']} blocks, stages "
          f"{description['stage_sizes']}, width {description['width']}, {head})")


def detect_architecture(state_dict: Mapping[str, np.ndarray]) -> str:
  """One of `ARCHITECTURES` (or "resnet_tiny") for a torchvision state_dict.

  Raises:
    ValueError: when the keys match none of them.
  """
  description = describe_resnet(state_dict)
  if description is not None:
    name = _name_of(description)
    if name in resnet_lib.SPECS:
      return name
    raise ValueError(f"the checkpoint holds {_format(description)}; expected one of "
                     f"{sorted(resnet_lib.SPECS)}.")
  if "features.0.weight" in state_dict and "classifier.6.weight" in state_dict:
    return "alexnet"
  raise ValueError(f"the checkpoint is not a torchvision ResNet or AlexNet (expected keys such "
                   f"as 'conv1.weight' or 'features.0.weight'); its first keys are "
                   f"{list(state_dict)[:5]}.")


# ---------------------------------------------------------------------------------------------
# Loading.


def _variables(model: nnx.Module):
  """`(path, variable)` of every Param and BatchStat, in a stable order."""
  for path, node in nnx.iter_graph(model):
    if isinstance(node, (nnx.Param, nnx.BatchStat)):
      yield tuple(str(p) for p in path), node


def _torch_key(path: tuple[str, ...], top_level: Mapping[str, str]) -> str:
  modules = list(path[:-1])
  if modules and modules[0] in top_level:
    modules[0] = top_level[modules[0]]
  if len(modules) >= 2 and modules[-2] == "downsample":
    modules[-1] = _DOWNSAMPLE_MODULES[modules[-1]]
  return ".".join(modules + [_VARIABLE_NAMES[path[-1]]])


def _to_nnx_layout(value: np.ndarray, flatten_from: tuple[int, ...] | None) -> np.ndarray:
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)
  if value.ndim == 2:
    if flatten_from is not None:
      # Rows of the PyTorch weight index a flattened (C, H, W) map; ours a flattened (H, W, C).
      value = value.reshape(value.shape[0], *flatten_from).transpose(0, 2, 3, 1)
      value = value.reshape(value.shape[0], -1)
    return value.T
  return value


def _assign(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *, skip: tuple[str, ...],
            ignorable: tuple[str, ...], what: str, top_level: Mapping[str, str] | None = None,
            flatten: Mapping[str, tuple[int, ...]] | None = None) -> None:
  """Copies the matching torch arrays into the model's variables, or raises naming what's wrong.

  `skip`: model path prefixes left as they are; `ignorable`: torch key prefixes the model may lack.
  """
  top_level, flatten = top_level or {}, flatten or {}
  updates, missing, mismatched, used = [], [], [], set()
  for path, variable in _variables(model):
    if path[0] in skip or "offset" in path:
      continue
    key = _torch_key(path, top_level)
    if key not in state_dict:
      missing.append(key)
      continue
    used.add(key)
    target = variable.get_value()
    value = _to_nnx_layout(np.asarray(state_dict[key]), flatten.get(key))
    if value.shape != tuple(target.shape):
      mismatched.append(f"{key}: checkpoint {tuple(state_dict[key].shape)} -> {value.shape}, "
                        f"model {tuple(target.shape)}")
      continue
    updates.append((variable, jnp.asarray(value, dtype=target.dtype)))
  unexpected = [k for k in state_dict if k not in used and not k.endswith("num_batches_tracked")
                and not k.startswith(ignorable)]
  problems = []
  if missing:
    problems.append(f"{len(missing)} keys missing from the checkpoint: {missing[:8]}")
  if mismatched:
    problems.append(f"{len(mismatched)} shapes differ: {mismatched[:8]}")
  if unexpected:
    problems.append(f"{len(unexpected)} checkpoint keys the model lacks: {unexpected[:8]}")
  if problems:
    raise ValueError(f"cannot load the checkpoint into {what}: " + "; ".join(problems) + ".")
  for variable, value in updates:
    variable.set_value(value)


def load_resnet(model: resnet_lib.ResNet, state_dict: Mapping[str, np.ndarray], *,
                load_fc: bool = True) -> None:
  """Fills `model` (any truncation; may be abstract) from a torchvision ResNet state_dict.

  Args:
    model: the ResNet to fill in place.
    state_dict: torchvision names -> arrays.
    load_fc: also copy the classifier (the model must have one with the same class count).

  Raises:
    ValueError: when the checkpoint is another architecture or keys are missing or mis-shaped.
  """
  found = describe_resnet(state_dict)
  expected = _describe_model(model)
  if found is None:
    raise ValueError(f"expected a torchvision ResNet checkpoint for {_format(expected)}; found "
                     f"keys {list(state_dict)[:5]}.")
  built = len(expected["stage_sizes"])
  same = (found["block"], found["width"], found["stage_sizes"][:built]) == (
      expected["block"], expected["width"], expected["stage_sizes"])
  if not same:
    raise ValueError(f"the checkpoint holds {_format(found)} but the model is "
                     f"{_format(expected)}.")
  load_fc = load_fc and model.fc is not None
  if load_fc and found["num_classes"] != expected["num_classes"]:
    raise ValueError(f"the checkpoint's fc has {found['num_classes']} classes but the model's "
                     f"has {expected['num_classes']}; pass load_fc=False to keep the model's.")
  ignorable = tuple(f"{stage}." for stage in resnet_lib.STAGES[built:])
  if not load_fc:
    ignorable += ("fc.",)
  _assign(model, state_dict, skip=() if load_fc else ("fc",), ignorable=ignorable,
          what=_format(expected))


def load_alexnet(model: alexnet_lib.AlexNet, state_dict: Mapping[str, np.ndarray], *,
                 load_fc: bool = True) -> None:
  """Fills `model` from a torchvision AlexNet state_dict; `load_fc=False` keeps `fc8`."""
  if "features.0.weight" not in state_dict:
    raise ValueError(f"expected a torchvision AlexNet checkpoint (keys 'features.*', "
                     f"'classifier.*'); found keys {list(state_dict)[:5]}.")
  channels = model.fc6.in_features // alexnet_lib.POOLED_SIZE**2
  flatten = {"classifier.1.weight": (channels, alexnet_lib.POOLED_SIZE, alexnet_lib.POOLED_SIZE)}
  _assign(model, state_dict, skip=() if load_fc else ("fc8",),
          ignorable=() if load_fc else ("classifier.6.",), top_level=_ALEXNET_MODULES,
          flatten=flatten, what="AlexNet")


def read_state_dict(
    source: str | os.PathLike | Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
  """A state_dict given as a mapping or a `.pth`/`.safetensors` path, as NumPy arrays."""
  if isinstance(source, Mapping):
    return {k: np.asarray(v) for k, v in source.items()}
  return torch_io.load_state_dict(source)


def load_torchvision(model: nnx.Module, source: str | os.PathLike | Mapping[str, np.ndarray], *,
                     load_fc: bool | None = None) -> None:
  """Fills a `ResNet` or `AlexNet` in place from a torchvision checkpoint.

  Args:
    model: the module to fill.
    source: a state_dict (name -> array) or a `.pth`/`.pt`/`.safetensors` path.
    load_fc: copy the final classifier; None copies it only when its class count matches.
  """
  state_dict = read_state_dict(source)
  if isinstance(model, resnet_lib.ResNet):
    if load_fc is None:
      found = describe_resnet(state_dict) or {}
      load_fc = model.fc is not None and found.get("num_classes") == model.fc.out_features
    load_resnet(model, state_dict, load_fc=load_fc)
  elif isinstance(model, alexnet_lib.AlexNet):
    if load_fc is None:
      weight = state_dict.get("classifier.6.weight")
      load_fc = weight is not None and weight.shape[0] == model.fc8.out_features
    load_alexnet(model, state_dict, load_fc=load_fc)
  else:
    raise ValueError(f"torchvision weights can be loaded into a ResNet or an AlexNet; got "
                     f"{type(model).__name__}.")


# ---------------------------------------------------------------------------------------------
# Converted files.


def _path_key(path: tuple[str, ...]) -> str:
  return "/".join(path)


def save_converted(model: nnx.Module, destination: str | os.PathLike) -> None:
  """Writes the model's Params and BatchStats to `.npz`, keyed by path ("layer1/0/conv1/kernel")."""
  arrays = {_path_key(path): np.asarray(v.get_value()) for path, v in _variables(model)}
  np.savez(destination, **arrays)


def load_converted(model: nnx.Module, source: str | os.PathLike, *,
                   skip: tuple[str, ...] = ()) -> None:
  """Fills `model` from a `.npz` written by `save_converted`.

  Args:
    model: the module to fill; variables under a top-level name in `skip` are left alone, and so
      are the file's entries the model lacks when the model is a truncated network.
    source: the `.npz` file.

  Raises:
    ValueError: on a variable the file lacks or a shape that differs.
  """
  with np.load(source) as data:
    arrays = dict(data)
  updates, problems = [], []
  for path, variable in _variables(model):
    # The deformable baseline's offset convolutions have no counterpart in a converted plain
    # network (they start at zero offsets), as in `_assign`.
    if path[0] in skip or "offset" in path:
      continue
    key = _path_key(path)
    target = variable.get_value()
    if key not in arrays:
      problems.append(f"missing {key}")
    elif arrays[key].shape != tuple(target.shape):
      problems.append(f"{key}: file {arrays[key].shape}, model {tuple(target.shape)}")
    else:
      updates.append((variable, jnp.asarray(arrays[key], dtype=target.dtype)))
  if problems:
    raise ValueError(f"{source} does not fit the model ({type(model).__name__}): "
                     f"{len(problems)} problems, e.g. {problems[:8]}.")
  for variable, value in updates:
    variable.set_value(value)


def build_for(arch: str, *, num_classes: int) -> nnx.Module:
  """An abstract (shape-only, nothing allocated) network of `arch` to convert into."""
  if arch == "alexnet":
    return nnx.eval_shape(lambda: alexnet_lib.AlexNet(num_classes=num_classes, rngs=nnx.Rngs(0)))
  return nnx.eval_shape(
      lambda: resnet_lib.build_resnet(arch, num_classes=num_classes, rngs=nnx.Rngs(0)))


def convert_file(source: str | os.PathLike, destination: str | os.PathLike, *,
                 arch: str | None = None) -> nnx.Module:
  """Converts a torchvision checkpoint file into a `.npz` of NNX variables.

  Args:
    source: `.pth`/`.pt`/`.safetensors` torchvision state_dict.
    destination: the `.npz` to write.
    arch: the expected architecture; None detects it from the keys.

  Returns:
    The filled model.
  """
  state_dict = torch_io.load_state_dict(source)
  detected = detect_architecture(state_dict)
  if arch is not None and arch != detected:
    raise ValueError(f"--arch is {arch!r} but {source} holds {detected!r}.")
  classifier = "classifier.6.weight" if detected == "alexnet" else "fc.weight"
  if classifier not in state_dict:
    raise ValueError(f"{source} holds a {detected} without its classifier ({classifier!r} is "
                     f"missing); convert_file needs a whole torchvision checkpoint, classifier "
                     f"included. To load a headless backbone, call load_torchvision on a model "
                     f"with load_fc=False.")
  num_classes = state_dict[classifier].shape[0]
  model = build_for(detected, num_classes=int(num_classes))
  load_torchvision(model, state_dict, load_fc=True)
  save_converted(model, destination)
  return model


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m saliency_jax.models.convert",
      description="Convert a torchvision ResNet/AlexNet checkpoint to saliency_jax weights.")
  parser.add_argument("--input", required=True, help="torchvision .pth/.pt or .safetensors file")
  parser.add_argument("--output", required=True, help="the .npz file to write")
  parser.add_argument("--arch", choices=ARCHITECTURES + ("resnet_tiny",), default=None,
                      help="expected architecture (detected from the keys when omitted)")
  args = parser.parse_args(argv)
  try:
    model = convert_file(args.input, args.output, arch=args.arch)
  except (ValueError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  count = sum(int(np.prod(v.get_value().shape)) for path, v in _variables(model)
              if isinstance(v, nnx.Param))
  print(f"wrote {args.output}: {type(model).__name__}, {count:,} parameters")
  return 0


if __name__ == "__main__":
  sys.exit(main())
