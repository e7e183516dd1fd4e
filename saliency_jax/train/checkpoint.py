"""Orbax checkpoints of a training run, and the guard against resuming with another config.

A checkpoint holds the train state (parameters, optimizer state, step, RNG) and the data
loader's JSON state. Orbax writes each one into a temporary directory and renames it when
complete, so a process killed at any moment leaves at worst a `*.orbax-checkpoint-tmp*` directory
that `latest_step()` ignores: a restart loads the last complete checkpoint or nothing. Saves are
asynchronous: the arrays are copied to host memory before `save` returns (so the next step may
donate them) and written in a background thread.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from saliency_jax.train import config as config_lib
from saliency_jax.train import reporting as logging_lib

CONFIG_FILE = "config.json"


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; what was saved before is intact."""


def _explain(error: BaseException) -> str:
  text = str(error)
  if "No space left" in text or "RESOURCE_EXHAUSTED" in text or getattr(error, "errno", 0) == 28:
    return "the disk is full"
  if "File too large" in text:
    return "a file size limit was hit"
  if isinstance(error, PermissionError) or "Permission denied" in text:
    return "permission denied"
  return f"{type(error).__name__}: {text[:400]}"


class Checkpointer:
  """Keep-N asynchronous checkpoints every K steps in one directory.

  Args:
    directory: where the step directories go (created if missing).
    every_steps: `save` writes when `step % every_steps == 0` (or when forced).
    keep: how many recent checkpoints to keep.
    asynchronous: write in a background thread.
  """

  def __init__(self, directory: str, *, every_steps: int, keep: int, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every_steps, max_to_keep=keep, create=True,
        cleanup_tmp_directories=True, enable_async_checkpointing=asynchronous)
    # The train state is replicated: orbax's default on CPU and TPU splits each array's
    # transfer to host over its replicas with one slicing op per array and replica, which for
    # a few hundred small arrays costs seconds of op compilation and saves nothing.
    arrays = ocp.type_handlers.create_type_handler_registry(
        (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False)))
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers={
        "state": ocp.PyTreeCheckpointHandler(type_handler_registry=arrays),
        "loader": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, *, loader_state: Mapping[str, Any],
           force: bool = False) -> bool:
    """Starts writing a checkpoint of `step` if it is due (or `force`).

    Raises:
      CheckpointError: this save or the previous asynchronous one failed; the checkpoints
        completed before it are left untouched.
    Returns:
      Whether a save was started.
    """
    try:
      return self._manager.save(
          step, force=force,
          args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                  loader=ocp.args.JsonSave(dict(loader_state))))
    except Exception as error:  # Orbax re-raises a background failure at the next call.
      raise self._save_error(step, error) from error

  def wait(self) -> None:
    """Blocks until the pending save is on disk; raises `CheckpointError` if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as error:
      raise self._save_error(None, error) from error

  def _save_error(self, step: int | None, error: BaseException) -> CheckpointError:
    saved = self.all_steps()
    what = f"of step {step} " if step is not None else ""
    kept = (f"the complete checkpoints (steps {saved}) are intact and the newest one, step "
            f"{saved[-1]}, is where the same command resumes" if saved
            else "no complete checkpoint exists yet")
    return CheckpointError(f"Saving the checkpoint {what}in {self.directory} failed "
                           f"({_explain(error)}); {kept}.")

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Reads checkpoint `step` onto the shardings of `abstract_state`.

    Args:
      step: a step of `all_steps()`.
      abstract_state: the state's pytree of `jax.ShapeDtypeStruct` with shardings.

    Returns:
      `(state, loader_state)`.
    """
    try:
      state_args = ocp.args.PyTreeRestore(
          item=abstract_state,
          restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=state_args, loader=ocp.args.JsonRestore()))
    except Exception as error:
      raise CheckpointError(
          f"Reading the checkpoint of step {step} in {self.directory} failed "
          f"({_explain(error)}). It does not match this model and optimizer: was it written "
          f"by another config? Use a new --workdir, or the config it was written with."
      ) from error
    return restored.state, dict(restored.loader)

  def close(self) -> None:
    """Waits for the pending save and releases the manager's threads."""
    try:
      self.wait()
    finally:
      self._manager.close()


def check_resume_config(workdir: str, config: ml_collections.ConfigDict, *,
                        resuming: bool, write: bool = True) -> None:
  """Stores the config in `workdir`, after checking it against the stored one when resuming.

  Every process of a multi-process run checks (so that all of them stop, none waits in a
  collective for one that did), and only the one with `write` stores.

  A workdir belongs to one experiment: resuming it with another model, data set or optimizer
  would load mismatched checkpoints or silently mix two runs. Fields that only change logging
  or saving (`config_lib.RESUMABLE_FIELDS`) may differ.

  Raises:
    ConfigError: the stored config differs in a field outside `RESUMABLE_FIELDS`; nothing in
      the workdir is changed.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = json.loads(config.to_json_best_effort())
  if resuming and os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    old = config_lib.flatten_config(stored)
    new = config_lib.flatten_config(current)
    differing = sorted(name for name in set(old) | set(new)
                       if name not in config_lib.RESUMABLE_FIELDS and old.get(name) != new.get(name))
    if differing:
      details = "; ".join(f"{name}: stored {old.get(name)!r}, given {new.get(name)!r}"
                          for name in differing[:8])
      raise config_lib.ConfigError(
          f"workdir {workdir} holds a run of another config ({details}). Use a new --workdir, "
          f"or run with the config stored in {path}.")
  if write:
    logging_lib.write_json(path, current)
