"""The training program: `train_and_evaluate(config, workdir)`.

It opens the data, builds the experiment (`experiment`: the model and the jitted `steps`),
takes the workdir, resumes from the newest checkpoint, then trains, evaluates, checkpoints and
reports; a signal, a diverged loss, a full disk or a lost process stop it with the newest good
checkpoint kept.

Several processes (TPU pods, multi-node GPU): give `--config.num_processes`,
`--config.coordinator_address` and `--config.process_id`, or run under a launcher JAX detects
(SLURM, Open MPI, a TPU pod slice) with `--config.num_processes=0`; then
`jax.distributed.initialize()` runs before anything touches a device, every process runs the same
command with the same workdir (on a shared file system), and process 0 writes logs and pictures.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from saliency_jax import files
from saliency_jax.models import model_config
from saliency_jax.train import checkpoint as checkpoint_lib
from saliency_jax.train import config as config_lib
from saliency_jax.train import distributed
from saliency_jax.train import experiment as experiment_lib
from saliency_jax.train.experiment import Experiment, RunLength
from saliency_jax.train import metrics as metrics_lib
from saliency_jax.train import panels as panels_lib
from saliency_jax.train import preemption as preemption_lib
from saliency_jax.train import priors
from saliency_jax.train import reporting
from saliency_jax.train.partitioning import make_mesh


def _data_api():
  from saliency_jax import data  # Late: tfds and grain load only when training.
  return data


def _prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as error:
    raise config_lib.ConfigError(f"workdir: {workdir!r} cannot be written ({error.strerror or error}); "
                     f"pass a --workdir you can write to.") from error
  return workdir


class NonFiniteLossError(FloatingPointError):
  """The loss or the gradient became NaN or infinite; nothing after the last good step was saved."""


def _first_non_finite(history: list[tuple[int, dict[str, float]]]) -> str | None:
  """Describes the first step whose loss, gradient or parameters are not finite, or None."""
  for step, values in history:
    for name, what in (("loss", "loss"), ("grad_norm", "gradient norm"),
                       ("param_norm", "parameter norm")):
      if not math.isfinite(values[name]):
        return f"The {what} is {values[name]} at step {step}"
  return None


def _fetch(pending: list[tuple[int, dict[str, jax.Array]]]) -> list[tuple[int, dict[str, float]]]:
  fetched = jax.device_get([m for _, m in pending])
  return [(step, {k: float(v) for k, v in m.items()}) for (step, _), m in zip(pending, fetched)]


def _interval_metrics(history: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
  sums: dict[str, float] = {}
  for _, values in history:
    for name, value in values.items():
      if name.startswith("sum_"):
        sums[name[4:]] = sums.get(name[4:], 0.0) + value
  means = metrics_lib.summarize(sums)
  means.pop("count")
  for name in ("grad_norm", "param_norm", "saliency_released"):
    if name in history[0][1]:
      means[name] = float(np.mean([v[name] for _, v in history]))
  return means


def _released_at(history: list[tuple[int, dict[str, float]]],
                 previous: Mapping[str, float]) -> int | None:
  """The step of `history` after which the saliency hold released, or None if it did not or
  had already in the interval before (`previous`, its metrics): the release is for good."""
  if previous.get("saliency_released", 0.0) > 0:
    return None
  return next((step for step, values in history if values.get("saliency_released")), None)


def _describe(results: Mapping[str, float], task: str) -> str:
  if task == "classification":
    return f"top-1 {results['top1']:.2%}, top-5 {results['top5']:.2%}, loss {results['loss']:.4f}"
  if task in ("segmentation", "detection"):
    name = "mIoU" if task == "segmentation" else "AP@0.5"
    key = "miou" if task == "segmentation" else "ap"
    parts = [f"{name} {results[key]:.2%}" if key in results else f"{name} -"]
    parts += [f"{region} {results[f'{key}_{region}']:.2%}" for region in ("small", "large")
              if f"{key}_{region}" in results]
    return ", ".join(parts) + f", loss {results['loss']:.4f}"
  devices = "".join(f", {device} {results[f'distance/{device}']:.4f}"
                    for device in ("phone", "tablet") if f"distance/{device}" in results)
  return f"mean distance error {results['distance']:.4f}{devices}, loss {results['loss']:.4f}"


def _close_quietly(*resources: Any) -> None:
  for resource in resources:
    try:
      resource.close()
    except Exception as error:  # pylint: disable=broad-except
      logging.warning("while stopping, closing %s failed too: %s", type(resource).__name__,
                      error)


def _data_error(error: ValueError) -> config_lib.ConfigError:
  # The data layer names its fields "data.FIELD".
  text = str(error)
  return config_lib.ConfigError(f"config.{text}" if text.startswith("data.") else
                                f"config.data: {text}")


def _check_evaluation_split(loader, config: ml_collections.ConfigDict) -> None:
  """Reads evaluation batches until one holds a readable image; else raises `ConfigError`.

  A split whose every image is unreadable would otherwise train to the end and fail at the
  final evaluation. A readable split costs one batch.
  """
  batches = iter(loader)
  try:
    for batch in batches:
      if bool(jnp.any(batch["mask"])):
        return
  finally:
    batches.close()
    loader.close()  # Its workers stop until the first evaluation.
  split = config.data.eval_split or "evaluation"
  raise config_lib.ConfigError(
      f"config.data: no image of the {config.data.name} {split!r} split can be read (see the "
      f"warnings above); check the files under --config.data.data_dir or prepare the dataset "
      f"again.")


def _saved_steps(directory: str) -> list[int]:
  """The steps of the checkpoint folders in `directory`, read without changing anything."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(name) for name in names
                if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def _run(config: ml_collections.ConfigDict, workdir: str, *, label: str) -> dict[str, Any]:
  data = _data_api()
  config_lib.validate_config(config, num_devices=jax.device_count())
  mesh = make_mesh(fsdp=config.fsdp_devices)
  # Everything bad input can break runs before the workdir is created or written: the config
  # checks above, opening the dataset, reading an evaluation batch, building the model and
  # loading its pretrained weights.
  try:
    info = data.dataset_info(config.data)
    loaders = {split: data.make_loader(config.data, split=split, mesh=mesh, seed=config.seed,
                                       global_batch_size=config.batch_size)
               for split in ("train", "eval")}
    prior = priors.box_prior(config)
  except ValueError as error:
    raise _data_error(error) from error
  if info.task == "dense":  # The model's head says which dense task it is.
    info = dataclasses.replace(info, task=config.model.dense_head)
  train_loader, eval_loader = loaders["train"], loaders["eval"]
  length = experiment_lib.run_length(config, info.train_size)
  is_chief = jax.process_index() == 0

  def build(load_pretrained: bool) -> Experiment:
    return experiment_lib.build_experiment(
        config, mesh=mesh, num_outputs=info.num_outputs, task=info.task,
        total_steps=length.total_steps, steps_per_epoch=length.steps_per_epoch,
        blur_steps=length.blur_steps, load_pretrained=load_pretrained, prior=prior)

  try:
    _check_evaluation_split(eval_loader, config)
    # A resumed run restores every parameter and does not need the pretrained files again.
    pretrained = not _saved_steps(os.path.join(os.path.abspath(workdir), "checkpoints"))
    experiment = build(load_pretrained=pretrained)
    workdir = _prepare_workdir(workdir)
  except BaseException:
    _close_quietly(train_loader, eval_loader)
    raise
  # Taken before anything in the workdir changes: a second run must neither clean up the
  # temporary checkpoint directory of a running one nor rewrite its config.
  lock = checkpoint_lib.WorkdirLock(workdir, process_index=jax.process_index())
  try:
    lock.acquire()
  except BaseException:
    _close_quietly(train_loader, eval_loader)
    raise
  try:
    with preemption_lib.StopSignals() as stop:
      return _train(config, workdir, label=label, mesh=mesh, info=info, length=length,
                    is_chief=is_chief, stop=stop, experiment=experiment, build=build,
                    pretrained=pretrained, train_loader=train_loader, eval_loader=eval_loader)
  finally:
    lock.release()


def _stored_results(path: str, total_steps: int) -> dict[str, Any] | None:
  """The results of a finished run in `path`, or None if it has none for `total_steps`."""
  try:
    with open(path) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return None
  if stored.get("steps") != total_steps or not stored.get("eval"):
    return None
  stored.pop("uniform", None)  # A compared run's entry: train_and_evaluate adds it again.
  return stored


def _train(config: ml_collections.ConfigDict, workdir: str, *, label: str, mesh: Mesh,
           info: Any, length: RunLength, is_chief: bool, stop: preemption_lib.StopSignals,
           experiment: Experiment, build: Callable[[bool], Experiment], pretrained: bool,
           train_loader: Any, eval_loader: Any) -> dict[str, Any]:
  """`_run`'s work once the workdir is locked: resume or start, then `_Training`.

  `experiment` was built by `build(pretrained)` (`pretrained`: with the pretrained weights)
  before the workdir was touched, and the loaders were made then too.
  """
  checkpoints = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints)
  latest = checkpoints.latest_step()
  checkpoint_lib.check_resume_config(workdir, config, resuming=latest is not None,
                                     write=is_chief)
  if latest is not None and latest >= length.total_steps:
    # A finished run is reported, not redone: its results.json stays as it is.
    stored = _stored_results(os.path.join(workdir, "results.json"), length.total_steps)
    if stored is not None:
      _close_quietly(checkpoints, train_loader, eval_loader)
      if is_chief:
        print(f"[{label}] {workdir} holds a finished run of {length.total_steps} steps; its "
              f"results.json is kept (pass a new --workdir to train again).", flush=True)
      return stored

  restored = (checkpoints.restore_newest(experiment.abstract_state())
              if latest is not None else None)
  if restored is None and not pretrained and (config.pretrained.task_net
                                              or config.pretrained.saliency_backbone):
    # No checkpoint read: this run starts afresh, from the pretrained weights after all.
    experiment = build(True)
  return _Training(config, workdir, label=label, mesh=mesh, info=info, length=length,
                   is_chief=is_chief, stop=stop, experiment=experiment, restored=restored,
                   checkpoints=checkpoints, train_loader=train_loader,
                   eval_loader=eval_loader).run()


class _Training:
  """One run's loop from its first (or restored) state: train, log, save, draw, evaluate, and
  leave the newest good checkpoint behind whatever stops it (a signal, a diverged loss, a full
  disk, a lost process). `run()` returns the results it writes to results.json."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, label: str,
               mesh: Mesh, info: Any, length: RunLength, is_chief: bool,
               stop: preemption_lib.StopSignals, experiment: Experiment,
               restored: checkpoint_lib.Restored | None,
               checkpoints: checkpoint_lib.Checkpointer, train_loader: Any, eval_loader: Any):
    self.config, self.workdir, self.label, self.info = config, workdir, label, info
    self.length, self.is_chief, self.stop, self.experiment = length, is_chief, stop, experiment
    self.checkpoints, self.train_loader, self.eval_loader = checkpoints, train_loader, eval_loader
    self.state = experiment.initial_state
    self.last_train: dict[str, float] = {}
    # (step, mean training loss since the previous log step): kept in the checkpoints, so that a
    # resumed run reports the whole curve (the zoom suite reads it to detect collapses).
    self.loss_curve: list[list[float]] = []
    self.rate = 0.0
    self.saved_step = None
    if restored is not None:
      self.state = restored.state
      train_loader.set_state(restored.loader_state)
      # What results.json reports if this run has no step left to train.
      self.last_train = dict(restored.metrics.get("train", {}))
      self.loss_curve = [list(point) for point in restored.metrics.get("loss_curve", [])]
      self.rate = float(restored.metrics.get("images_per_sec", 0.0))
      self.saved_step = restored.step
    self.start = int(self.state.step)
    # The metrics of the steps since the last log, still on the devices.
    self.pending: list[tuple[int, dict[str, jax.Array]]] = []
    # A multi-process run cannot leave an evaluation half way (its batches are collectives).
    self.abort_evaluation = jax.process_count() == 1
    self.progress = reporting.ProgressBar(
        total_steps=length.total_steps, start_step=self.start, batch_size=config.batch_size,
        enabled=is_chief, show_progress=config.progress_bar, label=label)
    self.writer = reporting.MetricWriter(os.path.join(workdir, "tensorboard"), enabled=is_chief)
    self.panel_dir = os.path.join(workdir, "panels")
    for note in restored.skipped if restored is not None else ():
      self.progress.message(f"[{label}] {note}")
    self.progress.message(
        f"[{label}] {config.model.name} (task net {config.model.task_net} at "
        f"{config.model.task_size}px) on {config.data.name}: {length.total_steps} steps of "
        f"{config.batch_size} on {mesh.size} device(s), "
        + (f"resuming from step {self.start} of {workdir}" if self.start
           else f"workdir {workdir}"))

  def evaluate(self, step: int) -> dict[str, float] | None:
    """The evaluation metrics, or None if a stop was requested during it."""
    began = time.perf_counter()
    sums = None
    for batch in self.eval_loader:
      if self.stop.requested is not None and self.abort_evaluation:
        self.eval_loader.close()
        return None
      sums = metrics_lib.add_sums(sums, self.experiment.eval_step(self.state, batch)[0])
    self.eval_loader.close()  # Frees the evaluation workers' memory until the next evaluation.
    results = metrics_lib.summarize(sums)
    self.writer.scalars(step, {k: v for k, v in results.items() if k != "count"},
                        prefix="eval/")
    self.progress.message(f"[{self.label}] step {step}: eval "
                          f"{_describe(results, self.info.task)} "
                          f"({int(results['count'])} examples)")
    self.progress.skip(time.perf_counter() - began)
    return results

  def draw_panels(self, step: int) -> None:
    """Panels of the first evaluation examples, as the model sees them now."""
    batches = iter(self.eval_loader)
    _, examples = self.experiment.eval_step(self.state, next(batches))
    batches.close()  # The next evaluation starts from the first batch again.
    if self.is_chief:
      panels_lib.write_panels(jax.device_get(examples), step=step, directory=self.panel_dir,
                              writer=self.writer, align_corners=self.config.model.align_corners,
                              task=self.info.task)

  def log_pending(self, done: int) -> None:
    """Fetches the metrics of the steps up to `done`; stops if any is not finite."""
    history = _fetch(self.pending)
    self.pending.clear()
    # Checked before every save, so that a checkpoint never holds a diverged state.
    problem = _first_non_finite(history)
    if problem:
      self.checkpoints.wait()
      saved = self.checkpoints.latest_step()
      kept = (f"the last good checkpoint, step {saved}, is kept in {self.checkpoints.directory}"
              if saved is not None else "no checkpoint had been saved yet")
      raise NonFiniteLossError(
          f"{problem}; training stopped and {kept}. Lower "
          f"--config.optimizer.learning_rate (or set --config.optimizer.grad_clip_norm) and "
          f"train again in a new --workdir.")
    released_at = _released_at(history, self.last_train)
    self.last_train = _interval_metrics(history)
    if released_at is not None:
      self.progress.message(
          f"[{self.label}] step {released_at}: the saliency network trains from here on (the "
          f"training loss fell below {self.config.optimizer.saliency_delay_loss} of chance)")
    self.loss_curve.append([done, self.last_train["loss"]])
    self.rate = self.progress.update(done, loss=self.last_train["loss"])
    lrs = {f"lr/{g}": float(s(done - 1)) for g, s in self.experiment.schedules.items()}
    self.writer.scalars(done, {**{f"train/{k}": v for k, v in self.last_train.items()},
                               "train/images_per_sec": self.rate, **lrs})

  def save(self, done: int, *, force: bool) -> None:
    if self.checkpoints.save(done, self.state, loader_state=self.train_loader.get_state(),
                             metrics={"train": self.last_train, "images_per_sec": self.rate,
                                      "loss_curve": list(self.loss_curve)}, force=force):
      self.saved_step = done

  def stopped(self, signum: int, what: str, *, then: str = "resume") -> preemption_lib.Stopped:
    return preemption_lib.Stopped(
        f"stopped by {preemption_lib.signal_name(signum)} {what} in "
        f"{self.checkpoints.directory}; run the same command to {then}.", signum=signum)

  def run(self) -> dict[str, Any]:
    """Trains from `start` to the end, evaluates, and writes and returns the results."""
    try:
      eval_results = self._loop()
    except BaseException as error:
      # Already failing: release everything without letting a second error (a pending save that
      # also fails) replace the first one. Without a peer, a pending save's commit would wait
      # for it until JAX's heartbeat timeout ends the process: the checkpointer is left as it is.
      lost = distributed.lost_process(error)
      _close_quietly(self.progress, self.writer, self.train_loader, self.eval_loader,
                     *([self.checkpoints] if lost is None else []))
      if isinstance(error, OSError) or lost is not None:
        # Writing logs, panels or results (a full disk, say), or a collective without its peer.
        kept = self.checkpoints.latest_step()
        (lost or error).add_note(
            f"The newest checkpoint, of step {kept} in {self.checkpoints.directory}, is kept; "
            f"fix the cause and run the same command to resume." if kept is not None else
            "No checkpoint had been saved yet.")
      if lost is not None:
        raise lost from None
      raise
    info = self.info
    at_chance = info.task == "classification" and metrics_lib.at_chance(
        eval_results, num_classes=info.num_outputs)
    if at_chance:
      self.progress.message(
          f"[{self.label}] this model's evaluation loss ({eval_results['loss']:.4f}) is no "
          f"better than chance's (log {info.num_outputs} = {math.log(info.num_outputs):.4f}): "
          f"either its input does not show the class, or its training never left chance "
          f"(another --config.seed may)")
    for resource in (self.progress, self.writer, self.train_loader, self.eval_loader,
                     self.checkpoints):
      resource.close()
    config = self.config
    results = {
        "label": self.label,
        "model": config.model.name,
        "task_net": config.model.task_net,
        "task_size": config.model.task_size,
        "dataset": config.data.name,
        "task": info.task,
        "steps": self.length.total_steps,
        "eval": eval_results,
        "at_chance": at_chance,
        "train": self.last_train,
        "loss_curve": self.loss_curve,
        "images_per_sec": self.rate,
        "workdir": self.workdir,
        "panels": self.panel_dir,
    }
    if self.is_chief:
      files.write_json(os.path.join(self.workdir, "results.json"), results)
    return results

  def _loop(self) -> dict[str, float]:
    """The steps, saves, panels and evaluations; the final evaluation's metrics."""
    config, length, stop = self.config, self.length, self.stop
    iterator: Iterator[Mapping[str, jax.Array]] = iter(self.train_loader)
    signum = stop.agreed(sync_point=True)
    if signum is not None:  # Signalled while resuming: nothing new to save.
      raise self.stopped(signum, f"while starting, before step {self.start + 1}; the "
                         f"checkpoints are unchanged")
    for step in range(self.start, length.total_steps):
      batch = next(iterator)
      self.state, step_metrics = self.experiment.train_step(self.state, batch,
                                                            step < length.blur_steps)
      done = step + 1
      self.pending.append((done, step_metrics))
      save_due = done % config.checkpoint_every_steps == 0 or done == length.total_steps
      logged = done % config.log_every_steps == 0 or save_due
      if logged:
        self.log_pending(done)
      if save_due:
        self.save(done, force=done == length.total_steps)
      # A save that failed in the background (a full disk, say) stops the run now, naming
      # its step, rather than at the next save.
      self.checkpoints.poll()
      if done % length.panel_every == 0 and done != length.total_steps:
        self.draw_panels(done)
      if done % length.eval_every == 0 and done != length.total_steps:
        self.evaluate(done)
      signum = stop.agreed(sync_point=logged)
      if signum is not None:
        if self.pending:
          self.log_pending(done)
        if self.saved_step != done:
          self.save(done, force=True)
        self.checkpoints.wait()
        raise self.stopped(signum, f"at step {done}; saved a checkpoint of step {done}")
    # The final checkpoint must be on disk before the run reports success: a save that failed
    # in the background (a full disk, say) surfaces here, before the evaluation, not after it.
    self.checkpoints.wait()
    if self.last_train.get("saliency_released") == 0.0:
      self.progress.message(
          f"[{self.label}] the saliency network was held all run: the training loss never fell "
          f"below {config.optimizer.saliency_delay_loss} of chance, so this model is uniform "
          f"downsampling (a longer run, or an optimizer.saliency_delay_loss closer to 1, "
          f"releases it sooner)")
    eval_results = None
    if stop.requested is None or not self.abort_evaluation:
      self.draw_panels(length.total_steps)
      eval_results = self.evaluate(length.total_steps)
    if eval_results is None:
      raise self.stopped(stop.requested, f"at the final evaluation; the final checkpoint, of "
                         f"step {length.total_steps}, is saved",
                         then="evaluate it and write results.json")
    return eval_results


def uniform_baseline(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`compare_with_uniform`'s baseline of a valid `config`: the same run, with uniform
  downsampling instead of the sampler (a dense model's own network on the identity grid)."""
  uniform = config.copy_and_resolve_references()
  if config.model.name == "zoom_unzoom":
    uniform.model.saliency = "none"
    uniform.model.detail_prior = False
    uniform.model.saliency_supervision = 0.0
    uniform.model.saliency_supervision_mass = "equal"
    uniform.model.warp_gradient = True
  else:
    uniform.model.name = "uniform"
    for field in model_config.SAMPLER_ONLY:
      uniform.model[field] = model_config.DEFAULTS[field]
  uniform.compare_with_uniform = False
  # The baseline has no saliency network to load or hold.
  uniform.pretrained.saliency_backbone = ""
  uniform.optimizer.saliency_delay_loss = 0.0
  config_lib.validate_config(uniform)
  return uniform


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates `config`'s model, checkpointing and logging under `workdir`.

  Running the same call again resumes from the newest complete checkpoint in `workdir`. With
  `config.compare_with_uniform`, the uniform-downsampling baseline is then trained the same
  way in `workdir/uniform` and both results are printed side by side.

  Args:
    config: a trainer config (`base_config()` with overrides, e.g. from `configs/`).
    workdir: directory for checkpoints, logs, panels and `results.json`.

  Returns:
    The results written to `workdir/results.json` (with a "uniform" entry when compared).

  Raises:
    ConfigError: a bad config, an unwritable workdir, or a workdir of another config.
    NonFiniteLossError: the loss diverged; the last good checkpoint is kept.
    checkpoint.CheckpointError: a checkpoint could not be written (e.g. the disk is full).
  """
  config_lib.validate_config(config)
  uniform = uniform_baseline(config) if config.compare_with_uniform else None
  distributed.initialize(config)
  results = _run(config, workdir, label=config.model.name)
  if uniform is None:
    _print_summary([results])
    return results
  baseline = _run(uniform, os.path.join(workdir, "uniform"), label="uniform")
  results = {**results, "uniform": baseline}
  if jax.process_index() == 0:
    files.write_json(os.path.join(os.path.abspath(workdir), "results.json"), results)
  _print_summary([results, baseline])
  return results


def _print_summary(runs: list[Mapping[str, Any]]) -> None:
  if jax.process_index() != 0:
    return
  print("\nResults (evaluation split, task network input "
        f"{runs[0]['task_size']}x{runs[0]['task_size']}):")
  for run in runs:
    print(f"  {run['label']:<18} {_describe(run['eval'], run['task'])}   "
          f"[{run['workdir']}/results.json]")
  key, name = {"classification": ("top1", "top-1"),
               "segmentation": ("miou_small", "small-object mIoU"),
               "detection": ("ap_small", "small-object AP")}.get(runs[0]["task"], (None, None))
  if len(runs) == 2 and key and all(key in run["eval"] for run in runs):
    margin = 100 * (runs[0]["eval"][key] - runs[1]["eval"][key])
    print(f"  {runs[0]['label']} - {runs[1]['label']}: {margin:+.1f} points of {name}")
  print(f"Panels (input | saliency | grid | sampled): {runs[0]['panels']}")
