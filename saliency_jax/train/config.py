"""The trainer's configuration: every field with its default, and validation.

`base_config()` is the schema: each experiment in `configs/` starts from it and overrides a few
fields, so a field that is not in `base_config()` is a typo. `validate_config` checks names,
types and values before anything is built, so that a bad command line fails in a second with a
message naming the field instead of minutes later inside XLA.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

# Fields that only change how a run is watched or saved, not what it computes: a workdir may be
# resumed with different values for these. Every other field must match the stored config.
RESUMABLE_FIELDS = frozenset({
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "panel_every_steps",
    "num_panels",
    "progress_bar",
    "num_processes",
    "coordinator_address",
    "process_id",
    "data.data_dir",
    "data.manual_dir",
    "data.num_workers",
    "data.prefetch",
    "pretrained.task_net",
    "pretrained.saliency_backbone",
})

class ConfigError(ValueError):
  """A config, or the workdir it is run in, cannot be used; nothing was changed."""


LR_GROUPS = ("task", "saliency_head", "saliency_backbone")
SCHEDULES = ("constant", "step", "cosine")
COMPUTE_DTYPES = ("float32", "bfloat16")


def default_model_config() -> ml_collections.ConfigDict:
  """The fields `saliency_jax.models.build_model` reads, with its defaults (the authors')."""
  from saliency_jax import models  # The model layer owns its fields and their defaults.

  fields = dict(models.DEFAULTS)
  # An optional string: None on the command line would otherwise lock the field to None.
  fields["output_activation"] = config_dict.placeholder(str)
  return ml_collections.ConfigDict(fields)


def base_config() -> ml_collections.ConfigDict:
  """Every field the trainer knows, with the authors' ImageNet recipe as defaults.

  Returns:
    A locked `ConfigDict`; experiments override fields of a copy.
  """
  from saliency_jax import data  # The data layer owns its fields and their defaults.

  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = default_model_config()
  config.data = data.default_data_config()
  # Paths of torchvision weights converted to .npz (see saliency_jax.models); empty: from scratch.
  config.pretrained = ml_collections.ConfigDict({"task_net": "", "saliency_backbone": ""})

  config.batch_size = 256  # Global: split over all devices of all processes.
  config.num_epochs = 120.0
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.blur_epochs = 30.0  # Blur warm-up of the sampled image (REFERENCE.md), 0 disables it.
  config.compute_dtype = "float32"

  config.optimizer = ml_collections.ConfigDict({
      "learning_rate": 0.1,
      "momentum": 0.9,
      "nesterov": False,
      "weight_decay": 1e-4,
      "schedule": "step",
      "decay_epochs": 30.0,  # "step": multiply by decay_factor every decay_epochs.
      "decay_factor": 0.1,
      "warmup_epochs": 0.0,  # Linear ramp from 0 over the first warmup_epochs.
      # The authors restart the task network's schedule when the blur warm-up ends.
      "restart_task_schedule_after_blur": True,
      "lr_multipliers": {"task": 1.0, "saliency_head": 0.01, "saliency_backbone": 0.001},
      "grad_clip_norm": 0.0,  # > 0 clips the global gradient norm.
  })

  config.log_every_steps = 50
  config.eval_every_steps = 0  # 0: evaluate once per epoch.
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.panel_every_steps = 0  # 0: as often as evaluations; panels are also drawn at the end.
  config.num_panels = 4
  config.progress_bar = True

  # The demo trains the uniform-downsampling baseline after the main model, same everything else.
  config.compare_with_uniform = False

  # Multi-process runs (TPU pods, multi-node GPU), see saliency_jax/train/trainer.py: 1 = a
  # single process; N > 1 with coordinator_address and process_id; 0 = ask the launcher (SLURM,
  # Open MPI, a TPU pod slice) through jax.distributed.initialize().
  config.num_processes = 1
  config.coordinator_address = ""
  config.process_id = -1
  config.lock()
  return config


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      value = value.to_dict()
    if isinstance(value, Mapping) and not _is_free_mapping(name):
      flat.update(_flatten(value, name + "."))
    else:
      flat[name] = value
  return flat


def _is_free_mapping(name: str) -> bool:
  # Mappings whose keys are data, not schema.
  return name == "optimizer.lr_multipliers"


def flatten_config(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
  """`{"model.name": ..., "optimizer.learning_rate": ...}`: the config as dotted names."""
  if isinstance(config, ml_collections.ConfigDict):
    config = config.to_dict()
  return _flatten(config)


def _type_name(value: Any) -> str:
  return type(value).__name__


def validate_config(config: ml_collections.ConfigDict, *,
                    num_devices: int | None = None) -> None:
  """Raises a `ConfigError` (a `ValueError`) naming the first field that is unknown, mistyped or out of range.

  Args:
    config: a trainer config (`base_config()` with overrides).
    num_devices: devices of the data-parallel mesh, to check that the global batch splits
      evenly; None skips that check.
  """
  schema = flatten_config(base_config())
  given = flatten_config(config)
  unknown = sorted(set(given) - set(schema))
  if unknown:
    raise ConfigError(f"config: unknown field(s) {', '.join(unknown)}; the known fields are "
                     f"those of saliency_jax.train.base_config().")
  missing = sorted(set(schema) - set(given))
  if missing:
    raise ConfigError(f"config: missing field(s) {', '.join(missing)}; start from "
                     f"saliency_jax.train.base_config() and override fields.")
  for name, default in schema.items():
    value = given[name]
    if name.startswith(("model.", "data.")) or default is None or value is None:
      continue  # The model and data layers check their own fields below.
    numeric = (int, float)
    if isinstance(default, bool) or isinstance(value, bool):
      ok = isinstance(default, bool) == isinstance(value, bool)
    elif isinstance(default, float):
      ok = isinstance(value, numeric)
    else:
      ok = isinstance(value, type(default)) or (
          isinstance(default, Mapping) and isinstance(value, Mapping))
    if not ok:
      raise ConfigError(f"config.{name}: expected {_type_name(default)}, "
                       f"got {value!r} ({_type_name(value)}).")

  def check(name: str, condition: bool, expected: str) -> None:
    if not condition:
      raise ConfigError(f"config.{name}: expected {expected}, got {given[name]!r}.")

  check("batch_size", config.batch_size >= 1, "a positive global batch size")
  check("num_epochs", config.num_epochs > 0 or config.num_train_steps > 0,
        "> 0 (or config.num_train_steps > 0)")
  check("blur_epochs", config.blur_epochs >= 0, ">= 0")
  check("compute_dtype", config.compute_dtype in COMPUTE_DTYPES, f"one of {COMPUTE_DTYPES}")
  opt = config.optimizer
  check("optimizer.learning_rate", opt.learning_rate > 0 and math.isfinite(opt.learning_rate),
        "a finite positive number")
  check("optimizer.momentum", 0 <= opt.momentum < 1, "in [0, 1)")
  check("optimizer.weight_decay", opt.weight_decay >= 0, ">= 0")
  check("optimizer.schedule", opt.schedule in SCHEDULES, f"one of {SCHEDULES}")
  check("optimizer.decay_epochs", opt.decay_epochs > 0, "> 0")
  check("optimizer.decay_factor", 0 < opt.decay_factor <= 1, "in (0, 1]")
  check("optimizer.warmup_epochs", opt.warmup_epochs >= 0, ">= 0")
  check("optimizer.grad_clip_norm", opt.grad_clip_norm >= 0, ">= 0")
  multipliers = dict(opt.lr_multipliers)
  check("optimizer.lr_multipliers", set(multipliers) == set(LR_GROUPS),
        f"exactly the groups {LR_GROUPS}")
  check("optimizer.lr_multipliers",
        all(isinstance(v, (int, float)) and v >= 0 for v in multipliers.values()),
        "non-negative numbers")
  for name in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    check(name, given[name] >= 1, ">= 1")
  for name in ("eval_every_steps", "panel_every_steps", "num_panels"):
    check(name, given[name] >= 0, ">= 0")
  check("num_processes", config.num_processes >= 0, ">= 0 (0: detected from the launcher)")
  if config.compare_with_uniform:
    check("compare_with_uniform", config.model.name != "uniform",
          "False when config.model.name is already 'uniform'")
  from saliency_jax import data, models
  for layer, validate in (("model", models.factory.validate_config),
                          ("data", data.parse_data_config)):
    try:
      validate(config[layer])
    except ValueError as error:
      raise ConfigError(f"config.{layer}: {error}") from error
  if num_devices is not None and config.batch_size % num_devices:
    raise ConfigError(
        f"config.batch_size: the global batch ({config.batch_size}) must be divisible by the "
        f"number of devices ({num_devices}); try --config.batch_size="
        f"{max(num_devices, config.batch_size // num_devices * num_devices)}.")
