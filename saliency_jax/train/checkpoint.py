"""Orbax checkpoints of a training run, the lock that keeps one run per workdir, and the guard
against resuming with another config.

A checkpoint holds the train state (parameters, optimizer state, step, RNG), the data loader's
JSON state and the last interval's training metrics. Orbax writes each one into a temporary
directory and renames it when complete, so a process killed at any moment leaves at worst a
`*.orbax-checkpoint-tmp*` directory that `latest_step()` ignores. A step directory can still be
broken (emptied or truncated by a full disk, a copy that stopped half way, a file system
fault): `restore_newest` then falls back to the newest older checkpoint that reads, and moves the
broken one aside as `STEP.broken`. Saves are asynchronous: the arrays are copied to host memory
before `save` returns (so the next step may donate them) and written in a background thread,
whose failure `poll` reports as soon as it happens.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging as std_logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from saliency_jax import files
from saliency_jax.train import config as config_lib

CONFIG_FILE = "config.json"
LOCK_FILE = "train.lock"
BROKEN_SUFFIX = ".broken"


class CheckpointError(RuntimeError):
  """A checkpoint could not be written or read; what was saved before is intact."""


class WorkdirBusyError(CheckpointError):
  """Another training run holds the workdir's lock; nothing in the workdir was changed."""


def _explain(error: BaseException) -> str:
  text = str(error)
  code = getattr(error, "errno", 0)
  if "No space left" in text or "RESOURCE_EXHAUSTED" in text or code == errno.ENOSPC:
    sizes = text.split("No space left on device: ")[-1] if code == errno.ENOSPC else ""
    return f"the disk is full: {sizes}" if "MB free" in sizes else "the disk is full"
  if "File too large" in text or code == errno.EFBIG:
    return "a file size limit was hit"
  if "Read-only file system" in text or code == errno.EROFS:
    return "the file system is read-only"
  if isinstance(error, PermissionError) or "Permission denied" in text:
    return "permission denied"
  return f"{type(error).__name__}: {text[:400]}"


class _DropOrbaxErrors(std_logging.Filter):
  """Drops orbax's error records (each with its traceback, from every background thread and
  asyncio task of a failed save): the same error reaches the caller once, as a
  `CheckpointError`."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno < std_logging.ERROR:
      return True
    if f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
      return False
    return not (record.name == "asyncio" and f"{os.sep}orbax{os.sep}" in record.getMessage())


_ORBAX_ERRORS = _DropOrbaxErrors()


def _is_key(leaf: Any) -> bool:
  return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _keys_as_data(tree: Any) -> Any:
  """`tree` with its typed PRNG keys (an exploring sampler's stream) as their raw uint32 data:
  what the checkpoint holds, so that it restores whatever orbax makes of typed keys."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract_as_data(abstract: Any) -> Any:
  """`_keys_as_data` of an abstract state (its key leaves' data keep their sharding's spec)."""
  def as_data(leaf):
    if not _is_key(leaf):
      return leaf
    data = jax.eval_shape(jax.random.key_data, leaf)
    sharding = leaf.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
      sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(
          *sharding.spec, *([None] * (data.ndim - leaf.ndim))))
    return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
  return jax.tree.map(as_data, abstract)


def _keys_from_data(tree: Any, abstract: Any) -> Any:
  """The inverse of `_keys_as_data`, with each key's implementation from `abstract`."""
  def wrap(value, leaf):
    if not _is_key(leaf):
      return value
    # A key dtype is named `key<impl>`, and `wrap_key_data` takes the impl's name.
    return jax.random.wrap_key_data(value, impl=str(leaf.dtype)[len("key<"):-1])
  return jax.tree.map(wrap, tree, abstract)


def _signature(tree: Any) -> list[tuple[tuple[int, ...], str]]:
  """The sorted shapes and dtypes of a tree's arrays: what a checkpoint must match."""
  return sorted((tuple(int(d) for d in leaf.shape), str(leaf.dtype))
                for leaf in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class Restored:
  """The newest readable checkpoint.

  Attributes:
    step: its step.
    state: the train state, on the shardings asked for.
    loader_state: the data loader's state.
    metrics: the training metrics saved with it (empty for checkpoints written without them).
    skipped: one line per newer checkpoint that could not be read (and was moved aside).
  """
  step: int
  state: Any
  loader_state: dict[str, Any]
  metrics: dict[str, Any]
  skipped: tuple[str, ...]


class _BrokenCheckpoint(Exception):
  """A step directory that does not read (says why); distinct from a config mismatch."""


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
    for logger in ("absl", "asyncio"):
      std_logging.getLogger(logger).addFilter(_ORBAX_ERRORS)  # Idempotent.
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
        "loader": ocp.JsonCheckpointHandler(),
        "metrics": ocp.JsonCheckpointHandler()})
    self._pending: int | None = None  # The step of the save in the background, if any.

  def latest_step(self) -> int | None:
    """The step of the newest checkpoint directory (complete or broken), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, *, loader_state: Mapping[str, Any],
           metrics: Mapping[str, Any] | None = None, force: bool = False) -> bool:
    """Starts writing a checkpoint of `step` if it is due (or `force`).

    Args:
      step: the step the state has reached.
      state: the train state.
      loader_state: the data loader's JSON state.
      metrics: JSON training metrics to keep with it (what `results.json` reports).
      force: save even if `step` is not a multiple of `every_steps`.

    Raises:
      CheckpointError: this save or the previous asynchronous one failed; the checkpoints
        completed before it are left untouched.
    Returns:
      Whether a save was started.
    """
    if jax.process_count() == 1 and (force or self._manager.should_save(step)):
      # Orbax waits for the previous save before it starts the next one anyway; done first,
      # the previous checkpoint is counted on the disk.
      self.wait()
      self._check_space(step)
    try:
      started = self._manager.save(
          step, force=force,
          args=ocp.args.Composite(state=ocp.args.PyTreeSave(_keys_as_data(state)),
                                  loader=ocp.args.JsonSave(dict(loader_state)),
                                  metrics=ocp.args.JsonSave(dict(metrics or {}))))
    except Exception as error:  # Orbax re-raises a background failure at the next call.
      failed = self._pending if self._pending is not None else step
      self._pending = None
      raise self._save_error(failed, error) from error
    if started:
      self._pending = step
    return started

  def _check_space(self, step: int) -> None:
    """Raises `CheckpointError` now if the newest checkpoint would not fit on the disk again.

    A save that fails half way in the background is reported too, but then the writes still
    in flight print tracebacks of their own (tensorstore's) for a while; and a full disk is
    best reported at the step it stops. Only for one process: several could disagree on
    the free space of a shared disk and leave one of them waiting in the save's collectives.
    """
    steps = self.all_steps()
    if not steps:
      return
    newest = os.path.join(self.directory, str(steps[-1]))
    needed = sum(os.path.getsize(os.path.join(folder, name))
                 for folder, _, names in os.walk(newest) for name in names)
    free = shutil.disk_usage(self.directory).free
    if free >= needed:
      return
    raise self._save_error(step, OSError(
        errno.ENOSPC, f"No space left on device: {free / 1e6:.1f} MB free, a checkpoint takes "
        f"{needed / 1e6:.1f} MB"))

  def poll(self) -> None:
    """Returns at once; raises `CheckpointError` if the background save has failed by now."""
    if self._pending is not None and not self._manager.is_saving_in_progress():
      self.wait()

  def wait(self) -> None:
    """Blocks until the pending save is on disk; raises `CheckpointError` if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as error:
      raise self._save_error(self._pending, error) from error
    finally:
      self._pending = None

  def _save_error(self, step: int | None, error: BaseException) -> CheckpointError:
    self._manager.reload()  # Forget a step whose directory was never completed.
    saved = [s for s in self.all_steps() if s != step]
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

    Raises:
      CheckpointError: the checkpoint holds other arrays than `abstract_state` (another
        config), or it cannot be read (says which).
    """
    try:
      state, loader_state, _ = self._read(step, abstract_state)
    except _BrokenCheckpoint as broken:
      raise CheckpointError(f"The checkpoint of step {step} in {self.directory} cannot be "
                            f"read: {broken}.") from broken
    return state, loader_state

  def restore_newest(self, abstract_state: Any, *, move_broken: bool = True) -> Restored | None:
    """Reads the newest checkpoint that reads, moving the broken newer ones aside.

    Every process of a multi-process run must call it (on a file system they share); they
    all see the same files and so pick the same step, and process 0 moves the broken ones.

    Args:
      abstract_state: the state's pytree of `jax.ShapeDtypeStruct` with shardings.
      move_broken: rename each broken newer step directory to `STEP.broken` (on process 0),
        so that orbax neither reuses nor deletes it.

    Returns:
      The checkpoint read, or None if the directory holds no readable checkpoint.

    Raises:
      CheckpointError: a checkpoint reads but holds other arrays than `abstract_state`
        (another config); nothing is moved.
    """
    skipped, broken_steps, found = [], [], None
    for step in reversed(self.all_steps()):
      try:
        found = (step, *self._read(step, abstract_state))
        break
      except _BrokenCheckpoint as broken:
        broken_steps.append((step, str(broken)))
    if broken_steps and move_broken:
      if jax.process_count() > 1:  # Nobody may still be reading what process 0 moves.
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("checkpoint: before moving broken checkpoints")
      for step, why in broken_steps:
        target = self._move_aside(step) if jax.process_index() == 0 else None
        where = (f"moved it to {target}" if target else "left it in place")
        skipped.append(f"skipped the checkpoint of step {step} in {self.directory}: {why}; "
                       f"{where}")
      if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("checkpoint: broken checkpoints moved")
      self._manager.reload()
    elif broken_steps:
      skipped = [f"skipped the checkpoint of step {step} in {self.directory}: {why}"
                 for step, why in broken_steps]
    if found is None:
      return None
    step, state, loader_state, metrics = found
    return Restored(step=step, state=state, loader_state=loader_state, metrics=metrics,
                    skipped=tuple(skipped))

  def _move_aside(self, step: int) -> str:
    source = os.path.join(self.directory, str(step))
    target, n = source + BROKEN_SUFFIX, 1
    while os.path.exists(target):
      target, n = f"{source}{BROKEN_SUFFIX}.{n}", n + 1
    os.rename(source, target)
    return target

  def _read(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """`(state, loader_state, metrics)` of `step`.

    Raises:
      _BrokenCheckpoint: the step directory is empty, incomplete or its data do not read.
      CheckpointError: it reads but holds other arrays than `abstract_state`.
    """
    path = os.path.join(self.directory, str(step))
    items = set(os.listdir(path)) if os.path.isdir(path) else set()
    if not items:
      raise _BrokenCheckpoint("its directory is empty")
    if not {"state", "loader"} <= items:
      raise _BrokenCheckpoint(f"it is incomplete (holds only {', '.join(sorted(items))})")
    try:
      stored = self._manager.item_metadata(step)["state"]
      stored_signature = _signature(stored)
    except Exception as error:
      raise _BrokenCheckpoint(f"its metadata do not read ({_explain(error)})") from error
    on_disk = _abstract_as_data(abstract_state)
    if stored_signature != _signature(on_disk):
      raise CheckpointError(
          f"The checkpoint of step {step} in {self.directory} does not match this model and "
          f"optimizer (it holds {len(stored_signature)} arrays of other shapes than the "
          f"{len(jax.tree.leaves(abstract_state))} of this config): was it written by another "
          f"config? Use a new --workdir, or the config it was written with.")
    args = {"state": ocp.args.PyTreeRestore(
                item=on_disk, restore_args=ocp.checkpoint_utils.construct_restore_args(on_disk)),
            "loader": ocp.args.JsonRestore()}
    if "metrics" in items:
      args["metrics"] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**args))
    except Exception as error:
      raise _BrokenCheckpoint(
          f"its data do not read, a file is missing or truncated ({_explain(error)[:200]})"
      ) from error
    metrics = dict(restored.metrics) if "metrics" in items and restored.metrics else {}
    return (_keys_from_data(restored.state, abstract_state), dict(restored.loader), metrics)

  def close(self) -> None:
    """Waits for the pending save and releases the manager's threads."""
    try:
      self.wait()
    finally:
      self._manager.close()


class WorkdirLock:
  """An exclusive `flock` on `workdir/train.lock` (one file per process of a multi-process
  run), so that a second run cannot write into a workdir that a running one uses.

  The kernel releases the lock when its process ends, however it ends (SIGKILL included), so
  no stale lock outlives a run. The file holds the owner's pid, for the error message.

  Args:
    workdir: an existing directory.
    process_index: this process's index (each process takes its own file).
  """

  def __init__(self, workdir: str, *, process_index: int = 0):
    name = LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.{process_index}"
    self.path = os.path.join(workdir, name)
    self._fd: int | None = None

  def acquire(self) -> None:
    """Takes the lock.

    Raises:
      WorkdirBusyError: another process holds it; nothing was changed.
    """
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      owner = os.read(fd, 64).decode(errors="replace").strip()
      os.close(fd)
      raise WorkdirBusyError(
          f"workdir {os.path.dirname(self.path)} is in use by another training run (process "
          f"{owner or '?'} holds {self.path}); wait for it to end or stop it, or pass another "
          f"--workdir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.release()
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
    files.write_json(path, current)
