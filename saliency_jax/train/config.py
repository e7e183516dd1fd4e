"""The trainer's configuration: every field with its default (the schema), and its checks.

`base_config()` is the schema: a locked `ConfigDict` whose defaults give each field its type, the
model's and data's fields being those of their layers (`saliency_jax.models.default_model_config`,
`saliency_jax.data.default_data_config`). Each experiment in `configs/` starts from it and
overrides a few fields, so a field that is not in `base_config()` is a typo. `checks()` is the one
table of ranges and relations between fields (the model's and data's tables included), and
`validate_config` runs it, with the type checks of `saliency_jax.schema.merge`, before anything
is built, read or written: a bad command line fails in a second with a message naming the field
instead of minutes later inside XLA.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections

from saliency_jax import schema

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
    "distributed_timeout_seconds",
    "heartbeat_timeout_seconds",
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
OPTIMIZERS = ("sgd", "adamw")
COMPUTE_DTYPES = ("float32", "bfloat16")


def base_config() -> ml_collections.ConfigDict:
  """Every field the trainer knows, with the authors' ImageNet recipe as defaults.

  Returns:
    A locked `ConfigDict`; experiments override fields of a copy.
  """
  # The model and data layers own their fields and defaults.
  from saliency_jax.data import config as data_config
  from saliency_jax.models import model_config

  config = ml_collections.ConfigDict()
  config.seed = 0
  config.model = model_config.default_model_config()
  config.data = data_config.default_data_config()
  # Paths of torchvision weights converted to .npz (see saliency_jax.models); empty: from scratch.
  config.pretrained = ml_collections.ConfigDict({"task_net": "", "saliency_backbone": ""})

  config.batch_size = 256  # Global: split over all devices of all processes.
  config.num_epochs = 120.0
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  config.blur_epochs = 30.0  # Blur warm-up of the sampled image (the authors' recipe); 0: none.
  config.compute_dtype = "float32"

  config.optimizer = ml_collections.ConfigDict({
      # "sgd": PyTorch's SGD (momentum, L2 weight decay), the authors' optimizer. "adamw":
      # PyTorch's AdamW, its first-moment decay `momentum` and its decoupled weight decay
      # `weight_decay` (times the learning rate).
      "name": "sgd",
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
      # Fraction of the run during which the saliency groups do not learn (rate 0), so that
      # the task network first learns on the starting warp (the identity, with a zero head).
      "saliency_delay": 0.0,
      # > 0 (classification): the saliency groups are held (no update, no weight decay, no
      # momentum) until the running mean of the training loss of the model's prediction falls
      # below this fraction of chance (the log of the number of classes): the task network
      # first learns to read on the starting warp, whatever the task takes to get there.
      "saliency_delay_loss": 0.0,
      "grad_clip_norm": 0.0,  # > 0 clips the global gradient norm.
      # True: each parameter group's gradient norm is clipped on its own, so that the saliency
      # network's gradient through the warp cannot scale the task network's down.
      "clip_per_group": False,
  })

  config.log_every_steps = 50
  config.eval_every_steps = 0  # 0: evaluate once per epoch.
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.panel_every_steps = 0  # 0: as often as evaluations; panels are also drawn at the end.
  config.num_panels = 4
  # The progress line; False leaves the run's other lines (start, evaluations) alone.
  config.progress_bar = True

  # The demo trains the uniform-downsampling baseline after the main model, same everything else.
  config.compare_with_uniform = False

  # Multi-process runs (TPU pods, multi-node GPU), see saliency_jax/train/trainer.py: 1 = a
  # single process; N > 1 with coordinator_address and process_id; 0 = ask the launcher (SLURM,
  # Open MPI, a TPU pod slice) through jax.distributed.initialize().
  config.num_processes = 1
  config.coordinator_address = ""
  config.process_id = -1
  # Bounds on waiting for the other processes: at the start (saliency_jax/train/distributed.py),
  # and for a process that stopped answering during the run (JAX's heartbeats).
  # > 1: fully sharded data parallelism, the large arrays of the train state split over this
  # many devices (saliency_jax/train/partitioning.py); 1: the state replicated on every device.
  config.fsdp_devices = 1
  config.distributed_timeout_seconds = 300
  config.heartbeat_timeout_seconds = 100
  config.lock()
  return config


# Mappings whose keys are data, not fields.
FREE_MAPPINGS = ("optimizer.lr_multipliers",)


def flatten_config(config: Mapping[str, Any] | ml_collections.ConfigDict) -> dict[str, Any]:
  """`{"model.name": ..., "optimizer.learning_rate": ...}`: the config as dotted names."""
  return schema.flatten(config, free=FREE_MAPPINGS)


def _models():
  from saliency_jax import models  # Late: the config module must not need Flax to import.
  return models


def _data_config():
  from saliency_jax.data import config as data_config
  return data_config


def _eval_image_size(c) -> int:
  return c.data.eval_image_size or c.data.image_size


def _is_host_port(address: str) -> bool:
  host, _, port = address.rpartition(":")
  return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _multipliers_ok(multipliers: Any) -> bool:
  values = dict(multipliers).values()
  return all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values)


def checks() -> tuple[schema.Check, ...]:
  """The table of every trainer config check, in the order they run.

  The model's and the data's rows (`saliency_jax.models.model_config.CHECKS`,
  `saliency_jax.data.config.CHECKS`, under `model.` and `data.`), then the trainer's own and
  those that relate fields of several layers. A function only because the model's rows need the
  model layer, which this module imports on use.
  """
  models, data_config = _models(), _data_config()
  model_config = models.model_config
  return (
      *schema.nested("model", model_config.CHECKS),
      *schema.nested("data", data_config.CHECKS),
      schema.Check("seed", lambda c: 0 <= c.seed < 2**63, "an int in [0, 2^63)"),
      schema.Check("batch_size", lambda c: c.batch_size >= 1, "a positive global batch size"),
      schema.Check("num_epochs", lambda c: c.num_epochs > 0 or c.num_train_steps > 0,
                   "> 0 (or config.num_train_steps > 0)"),
      schema.Check("blur_epochs", lambda c: c.blur_epochs >= 0, ">= 0"),
      schema.Check("compute_dtype", lambda c: c.compute_dtype in COMPUTE_DTYPES,
                   f"one of {COMPUTE_DTYPES}"),
      schema.Check("optimizer.learning_rate",
                   lambda c: c.optimizer.learning_rate > 0
                   and math.isfinite(c.optimizer.learning_rate), "a finite positive number"),
      schema.Check("optimizer.name", lambda c: c.optimizer.name in OPTIMIZERS,
                   f"one of {OPTIMIZERS}"),
      schema.Check("optimizer.momentum", lambda c: 0 <= c.optimizer.momentum < 1, "in [0, 1)"),
      schema.Check("optimizer.nesterov",
                   lambda c: not c.optimizer.nesterov or c.optimizer.name == "sgd",
                   'False unless optimizer.name is "sgd"'),
      schema.Check("optimizer.weight_decay", lambda c: c.optimizer.weight_decay >= 0, ">= 0"),
      schema.Check("optimizer.schedule", lambda c: c.optimizer.schedule in SCHEDULES,
                   f"one of {SCHEDULES}"),
      schema.Check("optimizer.decay_epochs", lambda c: c.optimizer.decay_epochs > 0, "> 0"),
      schema.Check("optimizer.decay_factor", lambda c: 0 < c.optimizer.decay_factor <= 1,
                   "in (0, 1]"),
      schema.Check("optimizer.warmup_epochs", lambda c: c.optimizer.warmup_epochs >= 0, ">= 0"),
      schema.Check("optimizer.grad_clip_norm", lambda c: c.optimizer.grad_clip_norm >= 0, ">= 0"),
      schema.Check("optimizer.saliency_delay", lambda c: 0 <= c.optimizer.saliency_delay < 1,
                   "in [0, 1), a fraction of the run"),
      schema.Check("optimizer.saliency_delay_loss",
                   lambda c: 0 <= c.optimizer.saliency_delay_loss < 1,
                   "in [0, 1), a fraction of the loss at chance"),
      schema.Check("optimizer.lr_multipliers",
                   lambda c: set(c.optimizer.lr_multipliers) == set(LR_GROUPS),
                   f"exactly the groups {LR_GROUPS}"),
      schema.Check("optimizer.lr_multipliers",
                   lambda c: _multipliers_ok(c.optimizer.lr_multipliers), "non-negative numbers"),
      *(schema.Check(name, lambda c, name=name: c[name] >= 1, ">= 1")
        for name in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints")),
      *(schema.Check(name, lambda c, name=name: c[name] >= 0, ">= 0")
        for name in ("eval_every_steps", "panel_every_steps", "num_panels")),
      schema.Check("num_processes", lambda c: c.num_processes >= 0,
                   ">= 0 (0: detected from the launcher)"),
      schema.Check("process_id",
                   lambda c: c.process_id == -1 or 0 <= c.process_id < max(c.num_processes, 1),
                   lambda c: f"-1 (detected) or in [0, num_processes = {c.num_processes})"),
      schema.Check("fsdp_devices", lambda c: c.fsdp_devices >= 1, ">= 1"),
      *(schema.Check(name, lambda c, name=name: c[name] >= 1, ">= 1 (seconds)")
        for name in ("distributed_timeout_seconds", "heartbeat_timeout_seconds")),
      schema.Check("coordinator_address",
                   lambda c: c.num_processes <= 1 or _is_host_port(c.coordinator_address),
                   lambda c: f"HOST:PORT, the address of process 0 (the same for all "
                             f"{c.num_processes} processes)"),
      schema.Check("process_id", lambda c: c.num_processes <= 1 or c.process_id >= 0,
                   lambda c: f"given, in [0, {c.num_processes}), for each of the "
                             f"num_processes = {c.num_processes} processes"),
      schema.Check("compare_with_uniform",
                   lambda c: not (c.compare_with_uniform and c.model.name == "uniform"),
                   "False when config.model.name is already 'uniform'"),
      schema.Check("compare_with_uniform",
                   lambda c: not (c.compare_with_uniform and c.model.name == "zoom_unzoom"
                                  and c.model.saliency == "none" and not c.model.detail_prior),
                   "False when config.model.saliency is already 'none' without the detail "
                   "prior (the uniform baseline)"),
      # The dense model trains on masks and boxes, and only it does.
      schema.Check("model.name",
                   lambda c: (c.model.name == "zoom_unzoom")
                   == (c.data.name in data_config.DENSE_DATASETS),
                   lambda c: (f"'zoom_unzoom' for the dense dataset {c.data.name!r}"
                              if c.data.name in data_config.DENSE_DATASETS else
                              f"a model of labels for data.name {c.data.name!r} (zoom_unzoom "
                              f"trains on the dense datasets {data_config.DENSE_DATASETS})")),
      schema.Check("optimizer.saliency_delay_loss",
                   lambda c: c.optimizer.saliency_delay_loss == 0
                   or data_config.DATASET_TASKS[c.data.name] == "classification",
                   lambda c: f"0 for data.name {c.data.name!r}, whose task is "
                             f"{data_config.DATASET_TASKS[c.data.name]} (the hold is measured "
                             f"against the loss at chance of a classification)"),
      schema.Check("blur_epochs",
                   lambda c: c.model.name != "zoom_unzoom" or c.blur_epochs == 0,
                   "0 for zoom_unzoom (the dense model has no blur warm-up)"),
      schema.Check("data.image_size",
                   lambda c: c.model.name != "zoom_unzoom"
                   or c.data.image_size % c.model.out_stride == 0,
                   lambda c: f"a multiple of model.out_stride ({c.model.out_stride}): the dense "
                             f"outputs tile the image"),
      # The models check their input at call time; these make the same checks before any work.
      schema.Check("model.task_size", lambda c: c.model.task_size <= c.data.image_size,
                   lambda c: f"at most data.image_size ({c.data.image_size}): the task network's "
                             f"input is sampled from the training images"),
      schema.Check("model.task_size", lambda c: c.model.task_size <= _eval_image_size(c),
                   lambda c: f"at most data.eval_image_size ({_eval_image_size(c)}): the task "
                             f"network's input is sampled from the evaluation images"),
      schema.Check("pretrained.saliency_backbone",
                   lambda c: not c.pretrained.saliency_backbone
                   or c.model.name in model_config.MODELS_WITH_SALIENCY_NET,
                   lambda c: f"'' for model.name {c.model.name!r}, which has no saliency or "
                             f"localisation network to load it into (the models that have one: "
                             f"{', '.join(model_config.MODELS_WITH_SALIENCY_NET)})",
                   advice="Drop --config.pretrained.saliency_backbone."),
      schema.Check("pretrained.task_net",
                   lambda c: not c.pretrained.task_net
                   or c.model.task_net in model_config.PRETRAINABLE_TASK_NETS,
                   lambda c: f"'' for model.task_net {c.model.task_net!r}: pretrained weights "
                             f"load into {', '.join(model_config.PRETRAINABLE_TASK_NETS)} only",
                   advice="Drop --config.pretrained.task_net to train it from scratch."),
  )


def validate_config(config: ml_collections.ConfigDict, *,
                    num_devices: int | None = None) -> None:
  """Raises a `ConfigError` (a `ValueError`) naming the first field that is unknown, missing,
  mistyped or out of range.

  Reads no file and builds nothing: the types of `base_config()`, then the table `checks()`.

  Args:
    config: a trainer config (`base_config()` with overrides).
    num_devices: devices of the data-parallel mesh, to check that the global batch splits
      evenly; None skips that check.
  """
  merged = schema.merge(base_config(), config, prefix="config", free=FREE_MAPPINGS,
                        complete=True, error=ConfigError,
                        missing_hint="start from saliency_jax.train.base_config() and override "
                                     "fields")
  schema.check(merged, checks(), prefix="config", error=ConfigError)
  if num_devices is not None and num_devices % config.fsdp_devices:
    raise ConfigError(
        f"config.fsdp_devices: expected a divisor of the number of devices ({num_devices}); "
        f"got {config.fsdp_devices}.")
  if num_devices is not None and config.batch_size % num_devices:
    raise ConfigError(
        f"config.batch_size: the global batch ({config.batch_size}) must be divisible by the "
        f"number of devices ({num_devices}); try --config.batch_size="
        f"{max(num_devices, config.batch_size // num_devices * num_devices)}.")
