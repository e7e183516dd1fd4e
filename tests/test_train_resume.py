"""Checkpoint and resume for real, and the trainer's answers to bad input.

The kill test runs train.py in subprocesses: one uninterrupted run, and one that is SIGKILLed
right after its first checkpoint, started again, SIGKILLed again while it writes its next
checkpoint, and started again with the same command. Both must end with bit-identical parameters,
optimizer state, RNG and step.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import ROOT, final_state
from saliency_jax import train
from saliency_jax.train import trainer
from tiny_experiments import load_config, tiny, train_config_source, write_gazecapture

# The second kill comes at the checkpoint of step 8 at the latest: 12 more steps leave the poll
# (every 2 ms) time to land before the run ends.
STEPS = 20
EVERY = 4

CONFIG_FILE = train_config_source({
    "data.synthetic.train_size": 32, "data.synthetic.eval_size": 8, "num_train_steps": STEPS,
    "blur_epochs": 2.0,  # The first 8 steps blur: the kill lands in the second phase.
    "checkpoint_every_steps": EVERY, "keep_checkpoints": 2, "log_every_steps": 2,
    "eval_every_steps": STEPS})


def test_sigkill_and_resume_gives_the_uninterrupted_result(train_program, tmp_path):
  reference, config_file = train_program.reference("resume_reference", CONFIG_FILE)
  killed = tmp_path / "killed"
  checkpoints = killed / "checkpoints"

  def run_and_kill(ready):
    """Starts the command and SIGKILLs it as soon as `ready()` holds (or after a deadline)."""
    process = subprocess.Popen(train_program.command(killed, config_file), cwd=ROOT,
                               env=train_program.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and not ready():
      time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists(), "the run ended before it could be killed"

  def entries():
    return os.listdir(checkpoints) if checkpoints.is_dir() else []

  # First kill: right after the first complete checkpoint.
  run_and_kill(lambda: any(p.isdigit() for p in entries()))
  complete_before = {p for p in entries() if p.isdigit()}
  # Second kill, in the resumed run: while the next checkpoint is being written (orbax writes
  # it under a temporary name, "8.orbax-checkpoint-tmp", and renames it when complete; the poll
  # caught that here), or else as soon as that checkpoint is complete.
  run_and_kill(lambda: any(p.split(".")[0] not in complete_before for p in entries()))

  resumed = train_program.run(killed, config_file)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  log = resumed.stdout + resumed.stderr
  start = int(log.split("resuming from step ")[1].split()[0])
  assert EVERY <= start < STEPS and start % EVERY == 0

  expected, got = final_state(reference, STEPS), final_state(killed, STEPS)
  paths = jax.tree_util.tree_flatten_with_path(expected)[0]
  assert len(paths) == len(jax.tree.leaves(got)) > 10
  for (path, a), b in zip(paths, jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  with open(reference / "results.json") as f, open(killed / "results.json") as g:
    uninterrupted, resumed_results = json.load(f), json.load(g)
  assert uninterrupted["eval"] == resumed_results["eval"]
  # The loss curve survives the kill: the steps before it come from the checkpoint.
  assert [step for step, _ in uninterrupted["loss_curve"]] == list(range(2, STEPS + 1, 2))
  assert resumed_results["loss_curve"] == uninterrupted["loss_curve"]


def test_an_exploring_sampler_resumes_to_the_uninterrupted_state(tmp_path):
  """An exploring sampler's stream is a typed PRNG key in the model's state: it is checkpointed
  as its raw data and restored as a key, so that a run cut after step 2 (its last checkpoint
  removed) resumes there and ends with the uninterrupted run's state."""
  config = tiny(load_config("default"), steps=3)
  config.model.explore = 2.0
  config.compare_with_uniform = False
  train.train_and_evaluate(config, str(tmp_path / "whole"))
  cut = tmp_path / "cut"
  train.train_and_evaluate(config, str(cut))
  shutil.rmtree(cut / "checkpoints" / "3")
  os.remove(cut / "results.json")
  train.train_and_evaluate(config, str(cut))
  expected, got = final_state(tmp_path / "whole", 3), final_state(cut, 3)
  paths = jax.tree_util.tree_flatten_with_path(expected)[0]
  assert len(paths) == len(jax.tree.leaves(got)) > 10
  assert any("explore_rngs" in jax.tree_util.keystr(path) for path, _ in paths)
  for (path, a), b in zip(paths, jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  gaze_dir = write_gazecapture(str(tmp_path / "gaze"))
  config = tiny(load_config("gaze"), gaze_dir=gaze_dir, steps=6)
  from saliency_jax import data
  make_loader = data.make_loader

  class Poisoned:
    """The real training loader, except that batch 3's targets are NaN (a corrupt label)."""

    def __init__(self, loader):
      self._loader = loader

    def __iter__(self):
      for step, batch in enumerate(self._loader, start=1):
        yield {**batch, "label": batch["label"] * np.nan} if step == 3 else batch

    def __getattr__(self, name):  # get_state, set_state, close.
      return getattr(self._loader, name)

  def poisoned_loader(*args, split, **kwargs):
    loader = make_loader(*args, split=split, **kwargs)
    return Poisoned(loader) if split == "train" else loader

  monkeypatch.setattr(data, "make_loader", poisoned_loader)
  workdir = str(tmp_path / "run")
  with pytest.raises(train.NonFiniteLossError, match=r"loss is nan at step 3.*step 2"):
    train.train_and_evaluate(config, workdir)
  manager = train.Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=1, keep=3)
  assert manager.all_steps() == [1, 2]
  state = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", "2", "state"))
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
  manager.close()

  # The same workdir with another optimizer is refused before anything is touched.
  other = config.copy_and_resolve_references()
  other.optimizer.learning_rate = 0.5
  with pytest.raises(train.ConfigError, match="optimizer.learning_rate: stored"):
    train.train_and_evaluate(other, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]


def test_unwritable_workdir_is_reported_before_training(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  config = tiny(load_config("default"))
  with pytest.raises(train.ConfigError, match="cannot be written"):
    train.train_and_evaluate(config, str(blocker / "run"))


def test_batch_not_divisible_by_devices_is_reported(tmp_path):
  config = tiny(load_config("default"), batch_size=12)
  with pytest.raises(train.ConfigError, match=r"divisible by the number of devices \(8\)"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_an_io_error_names_a_kept_checkpoint_only_where_one_exists(tmp_path, monkeypatch):
  def no_space(*args, **kwargs):  # Panels are the first files a step writes after a save.
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(trainer.panels_lib, "write_panels", no_space)
  config = tiny(load_config("uniform"), steps=4)
  config.checkpoint_every_steps = 2
  config.panel_every_steps = 1  # At step 1, before any checkpoint.
  with pytest.raises(OSError) as raised:
    train.train_and_evaluate(config, str(tmp_path / "first"))
  assert raised.value.__notes__ == ["No checkpoint had been saved yet."]

  config.panel_every_steps = 3  # At step 3, after the checkpoint of step 2.
  with pytest.raises(OSError) as raised:
    train.train_and_evaluate(config, str(tmp_path / "second"))
  assert raised.value.__notes__ == [
      f"The newest checkpoint, of step 2 in {tmp_path / 'second' / 'checkpoints'}, is kept; "
      f"fix the cause and run the same command to resume."]
