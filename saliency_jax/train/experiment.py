"""An experiment: the config's model, its optimizer and the jitted steps on a mesh, and its length.

Data parallel over a `jax.sharding.Mesh` of every device (axis "data", and "fsdp" with
`config.fsdp_devices > 1`; see `partitioning`): the batch is split over all devices, the train
state is replicated (or, with FSDP, its large arrays split over "fsdp"), and each step
(`steps.train_step`, `steps.eval_step`) is compiled by `jax.jit` with those shardings, the state
donated. XLA inserts the gradient all-reduce; BatchNorm statistics are those of the global
batch, so a step on 8 devices computes what it computes on 1.

The train step is compiled at most twice per run: once with the blur warm-up and once without
(`blur` is static because it changes the graph), never per step.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from saliency_jax.train import config as config_lib
from saliency_jax.train import optimizer as optimizer_lib
from saliency_jax.train import partitioning
from saliency_jax.train import steps
from saliency_jax.train.steps import TrainState


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A model, its optimizer and the compiled steps, on one mesh.

  Attributes:
    mesh: the data-parallel mesh.
    task: one of `metrics.TASKS` (classification, regression, segmentation, detection).
    initial_state: the freshly initialised `TrainState`, laid out by `partitioning`.
    train_step: `steps.train_step` as `(state, batch, blur) -> (state, metrics)`, jitted,
      state donated; `blur` (static) turns the blur warm-up on.
    eval_step: `steps.eval_step` as `(state, batch) -> (sums, examples)`, jitted.
    schedules: the learning rate of each parameter group.
  """
  mesh: Mesh
  task: str
  initial_state: TrainState
  train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  eval_step: Callable[..., tuple[dict[str, jax.Array], dict[str, jax.Array]]]
  schedules: Mapping[str, optimizer_lib.Schedule]

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def abstract_state(self) -> TrainState:
    """The state's shapes, dtypes and shardings, for restoring a checkpoint onto the mesh."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        self.initial_state)


def _models_api():
  from saliency_jax import models  # Late: importing the trainer package loads no model.
  return models


def create_model(config: ml_collections.ConfigDict, *, num_outputs: int,
                 load_pretrained: bool = True, prior: jax.Array | None = None) -> nnx.Module:
  """The config's model, initialised from `config.seed`, pretrained weights loaded if given.

  `load_pretrained=False` skips the pretrained files (a resumed run restores every parameter
  from its checkpoint, and need not find them again). `prior`: the dense model's fixed saliency
  (`priors.box_prior`).
  """
  models = _models_api()
  files = {name: config.pretrained[name] if load_pretrained else ""
           for name in ("task_net", "saliency_backbone")}
  for name, path in files.items():
    if path and not os.path.isfile(path):
      raise config_lib.ConfigError(f"config.pretrained.{name}: no file at {path!r}.")
  # Parameters are drawn from the "rbg" generator: every parameter shape compiles its own
  # sampling kernel, and threefry's take several times longer to compile (seconds each on
  # CPU). Streams the model keeps in its state (dropout) stay threefry, whose draws do not
  # depend on how the batch is sharded.
  rngs = nnx.Rngs(params=jax.random.key(config.seed, impl="rbg"),
                  default=jax.random.fold_in(jax.random.key(config.seed), 2))
  model = models.build_model(config.model, num_outputs=num_outputs, rngs=rngs, prior=prior)
  for name, path in files.items():
    if path:
      try:
        models.load_pretrained(model, **{name: path})
      except Exception as error:  # Any unreadable or mismatched file is the user's input.
        raise config_lib.ConfigError(
            f"config.pretrained.{name}: {path!r} cannot be loaded into model.{name} "
            f"{config.model[name]!r} ({error}).") from error
  if config.compute_dtype == "bfloat16":
    # Flax layers compute in their `dtype` and keep float32 parameters: bfloat16 activations
    # and matmuls with float32 master weights and optimizer state.
    model.set_attributes(dtype=jnp.bfloat16, raise_if_not_found=False)
  return model


def build_experiment(config: ml_collections.ConfigDict, *, mesh: Mesh, num_outputs: int,
                     task: str, total_steps: int, steps_per_epoch: float,
                     blur_steps: int, load_pretrained: bool = True,
                     prior: jax.Array | None = None) -> Experiment:
  """Builds the model, optimizer, initial state and the jitted steps on `mesh`.

  Args:
    config: a validated trainer config.
    mesh: the mesh (`partitioning.make_mesh`).
    num_outputs: classes (classification; object classes for the dense tasks) or regression
      outputs.
    task: one of `metrics.TASKS`.
    total_steps: length of the run (for the schedules).
    steps_per_epoch: steps in one epoch.
    blur_steps: steps of the blur warm-up (for the task group's schedule restart).
    load_pretrained: load `config.pretrained`'s weights (not needed when resuming).
    prior: the dense model's fixed saliency map, if its config asks for one.
  """
  models = _models_api()
  model = create_model(config, num_outputs=num_outputs, load_pretrained=load_pretrained,
                       prior=prior)
  model.train()
  train_graph, params, model_state = nnx.split(model, nnx.Param, ...)
  model.eval()
  eval_graph = nnx.graphdef(model)

  schedules = optimizer_lib.group_schedules(
      config.optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
      blur_steps=blur_steps)
  tx = optimizer_lib.make_optimizer(
      config.optimizer, param_labels=models.param_labels(params), schedules=schedules,
      chance_loss=math.log(num_outputs) if task == "classification" and num_outputs > 1 else None)
  replicated = NamedSharding(mesh, P())
  batch_sharding = partitioning.batch_sharding(mesh)
  state = steps.initial_state(params, model_state, tx, seed=config.seed)
  state_sharding = partitioning.state_shardings(state, mesh)
  state = jax.device_put(state, state_sharding)
  train_step = functools.partial(steps.train_step, graphdef=train_graph, tx=tx, task=task,
                                 segmentation_loss=config.model.segmentation_loss,
                                 saliency_supervision=config.model.saliency_supervision,
                                 saliency_supervision_mass=config.model.saliency_supervision_mass,
                                 segmentation_auxiliary=config.model.segmentation_auxiliary)
  eval_step = functools.partial(steps.eval_step, graphdef=eval_graph, task=task,
                                num_panels=config.num_panels)
  jit_train = jax.jit(train_step, static_argnums=2,
                      in_shardings=(state_sharding, batch_sharding),
                      out_shardings=(state_sharding, replicated), donate_argnums=0)
  jit_eval = jax.jit(eval_step, in_shardings=(state_sharding, batch_sharding),
                     out_shardings=(replicated, replicated))
  return Experiment(mesh=mesh, task=task, initial_state=state, train_step=jit_train,
                    eval_step=jit_eval, schedules=schedules)


@dataclasses.dataclass(frozen=True)
class RunLength:
  """How long a run is, in steps."""
  steps_per_epoch: float
  total_steps: int
  blur_steps: int
  eval_every: int
  panel_every: int


def run_length(config: ml_collections.ConfigDict, train_size: int) -> RunLength:
  """The run's length and cadences from the config and the training split's size."""
  steps_per_epoch = max(train_size / config.batch_size, 1.0)
  if config.num_train_steps > 0:
    total = config.num_train_steps
  else:
    total = max(int(math.ceil(config.num_epochs * steps_per_epoch)), 1)
  eval_every = config.eval_every_steps or max(int(round(steps_per_epoch)), 1)
  return RunLength(
      steps_per_epoch=steps_per_epoch, total_steps=total,
      blur_steps=min(int(round(config.blur_epochs * steps_per_epoch)), total),
      eval_every=eval_every, panel_every=config.panel_every_steps or eval_every)
