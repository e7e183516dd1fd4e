"""The trainer: `train_and_evaluate(config, workdir)`, its config schema, steps and checkpoints.

`train_step` and `eval_step` are pure functions of `(state, batch)` (module `steps`);
`build_experiment` binds them to a config's model and optimizer and jits them on a mesh.

Importing this package loads Flax, optax and orbax (not tfds or grain, which load when training
starts).
"""

from saliency_jax.train.checkpoint import CheckpointError
from saliency_jax.train.checkpoint import Checkpointer
from saliency_jax.train.checkpoint import WorkdirBusyError
from saliency_jax.train.config import ConfigError
from saliency_jax.train.config import base_config
from saliency_jax.train.config import validate_config
from saliency_jax.train.distributed import ProcessLostError
from saliency_jax.train.optimizer import group_schedules
from saliency_jax.train.optimizer import learning_rate_schedule
from saliency_jax.train.optimizer import make_optimizer
from saliency_jax.train.preemption import Stopped
from saliency_jax.train.experiment import Experiment
from saliency_jax.train.experiment import build_experiment
from saliency_jax.train.experiment import create_model
from saliency_jax.train.partitioning import make_mesh
from saliency_jax.train.steps import TrainState
from saliency_jax.train.steps import eval_step
from saliency_jax.train.steps import train_step
from saliency_jax.train.trainer import NonFiniteLossError
from saliency_jax.train.trainer import train_and_evaluate

__all__ = [
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "Experiment",
    "NonFiniteLossError",
    "ProcessLostError",
    "Stopped",
    "TrainState",
    "WorkdirBusyError",
    "base_config",
    "build_experiment",
    "create_model",
    "eval_step",
    "group_schedules",
    "learning_rate_schedule",
    "make_mesh",
    "make_optimizer",
    "train_and_evaluate",
    "train_step",
    "validate_config",
]
