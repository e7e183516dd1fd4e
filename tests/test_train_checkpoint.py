"""Checkpoints: a save that fails for lack of space loses nothing and is reported at its step;
broken checkpoints are skipped (and kept aside), another config's are named; a workdir keeps
its config and has one run at a time."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from saliency_jax.train import base_config
from saliency_jax.train import checkpoint


def _abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def test_failed_save_keeps_previous_checkpoint(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), every_steps=1, keep=3)
  small = {"w": jnp.arange(10.0), "step": jnp.int32(1)}
  ckpt.save(1, small, loader_state={"position": 1})
  ckpt.wait()
  # Incompressible data larger than the file size limit: the write fails like a full disk.
  big = {"w": jax.random.normal(jax.random.key(0), (200_000,)), "step": jnp.int32(2)}
  old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
  old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, old_limit[1]))
  try:
    with pytest.raises(checkpoint.CheckpointError) as raised:
      ckpt.save(2, big, loader_state={"position": 2})
      ckpt.wait()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)
  message = str(raised.value)
  assert "step 1" in message and "intact" in message, message
  # A fresh manager (a restarted process) sees only the complete checkpoint, unchanged.
  reopened = checkpoint.Checkpointer(str(tmp_path / "ckpt"), every_steps=1, keep=3)
  assert reopened.latest_step() == 1
  state, loader_state = reopened.restore(1, _abstract(small))
  np.testing.assert_array_equal(state["w"], np.arange(10.0))
  assert loader_state == {"position": 1}
  reopened.close()


def test_restore_with_another_structure_names_the_problem(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), every_steps=1, keep=1)
  ckpt.save(3, {"w": jnp.zeros(4)}, loader_state={})
  ckpt.close()
  reopened = checkpoint.Checkpointer(str(tmp_path / "ckpt"), every_steps=1, keep=1)
  with pytest.raises(checkpoint.CheckpointError, match="another config"):
    reopened.restore(3, _abstract({"w": jnp.zeros(5)}))
  reopened.close()


def test_every_k_steps_and_keep_n(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), every_steps=2, keep=2)
  for step in range(1, 8):
    ckpt.save(step, {"w": jnp.full(3, float(step))}, loader_state={"step": step})
  ckpt.save(7, {"w": jnp.full(3, 7.0)}, loader_state={"step": 7}, force=True)
  ckpt.wait()
  assert ckpt.all_steps() == [6, 7]
  ckpt.close()


def test_resume_config_guard(tmp_path):
  workdir = str(tmp_path)
  config = base_config()
  checkpoint.check_resume_config(workdir, config, resuming=False)
  with open(os.path.join(workdir, checkpoint.CONFIG_FILE)) as f:
    assert json.load(f)["model"]["name"] == config.model.name
  watched = base_config()
  watched.log_every_steps = 7  # Logging fields may change between runs of one workdir.
  checkpoint.check_resume_config(workdir, watched, resuming=True)
  other = base_config()
  other.model.task_net = "resnet18"
  other.optimizer.learning_rate = 0.5
  with pytest.raises(ValueError, match=r"model.task_net: stored 'resnet50', given 'resnet18'"):
    checkpoint.check_resume_config(workdir, other, resuming=True)
  with open(os.path.join(workdir, checkpoint.CONFIG_FILE)) as f:
    assert json.load(f)["optimizer"]["learning_rate"] == config.optimizer.learning_rate


def _save_steps(directory, steps):
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=len(steps))
  trees = {s: {"w": jnp.arange(1000.0) * s, "step": jnp.int32(s)} for s in steps}
  for s in steps:
    ckpt.save(s, trees[s], loader_state={"position": s}, metrics={"train": {"loss": s / 10}})
  ckpt.close()
  return trees


def test_restore_newest_falls_back_over_broken_checkpoints(tmp_path):
  directory = tmp_path / "ckpt"
  trees = _save_steps(str(directory), [1, 2, 3, 4])
  # 4: a partial folder (its arrays missing); 3: an empty folder; 2: a truncated data file.
  shutil.rmtree(directory / "4" / "state" / "ocdbt.process_0")
  shutil.rmtree(directory / "3")
  (directory / "3").mkdir()
  data = max((directory / "2" / "state" / "ocdbt.process_0" / "d").iterdir(),
             key=lambda p: p.stat().st_size)
  os.truncate(data, data.stat().st_size // 2)

  ckpt = checkpoint.Checkpointer(str(directory), every_steps=1, keep=4)
  assert ckpt.latest_step() == 4  # Orbax lists the broken folders as checkpoints.
  restored = ckpt.restore_newest(_abstract(trees[1]))
  assert restored.step == 1 and restored.loader_state == {"position": 1}
  assert restored.metrics == {"train": {"loss": 0.1}}
  np.testing.assert_array_equal(restored.state["w"], np.arange(1000.0))
  assert [note.split(":")[0] for note in restored.skipped] == [
      f"skipped the checkpoint of step {s} in {directory}" for s in (4, 3, 2)]
  assert "directory is empty" in restored.skipped[1]
  assert all("data do not read" in restored.skipped[i] for i in (0, 2))
  # Moved aside, not deleted: orbax no longer lists them, and the same steps can be saved again.
  assert sorted(os.listdir(directory)) == ["1", "2.broken", "3.broken", "4.broken"]
  assert ckpt.all_steps() == [1]
  ckpt.save(2, trees[2], loader_state={"position": 2})
  ckpt.close()
  assert (directory / "2").is_dir() and (directory / "2.broken").is_dir()


def test_restore_newest_reports_another_config_and_moves_nothing(tmp_path):
  directory = tmp_path / "ckpt"
  _save_steps(str(directory), [1, 2])
  ckpt = checkpoint.Checkpointer(str(directory), every_steps=1, keep=2)
  with pytest.raises(checkpoint.CheckpointError, match="does not match this model.*another config"):
    ckpt.restore_newest(_abstract({"w": jnp.zeros(7), "step": jnp.int32(0)}))
  ckpt.close()
  assert sorted(os.listdir(directory)) == ["1", "2"]


def test_failed_background_save_is_reported_by_poll_at_its_step(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), every_steps=1, keep=3)
  ckpt.save(1, {"w": jnp.arange(10.0)}, loader_state={})
  ckpt.wait()
  big = {"w": jax.random.normal(jax.random.key(0), (200_000,))}
  old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
  old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, old_limit[1]))
  try:
    ckpt.save(2, big, loader_state={})
    with pytest.raises(checkpoint.CheckpointError) as raised:
      for _ in range(10_000):  # What the training loop does after each step.
        ckpt.poll()
        time.sleep(0.001)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)
  message = str(raised.value)
  assert message.startswith("Saving the checkpoint of step 2 ") and "file size limit" in message
  assert "steps [1]" in message, message
  ckpt.close()


def test_workdir_lock_refuses_a_second_holder_until_the_first_ends(tmp_path):
  first = checkpoint.WorkdirLock(str(tmp_path))
  first.acquire()
  with pytest.raises(checkpoint.WorkdirBusyError,
                     match=rf"in use by another training run \(process {os.getpid()} holds"):
    checkpoint.WorkdirLock(str(tmp_path)).acquire()
  first.release()
  # A holder killed with SIGKILL leaves no stale lock: the kernel releases it.
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
       "from saliency_jax.train import checkpoint; "
       "checkpoint.WorkdirLock(sys.argv[2]).acquire(); print('locked', flush=True); "
       "time.sleep(600)", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
       str(tmp_path)], stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "locked"
  with pytest.raises(checkpoint.WorkdirBusyError, match=f"process {holder.pid} holds"):
    checkpoint.WorkdirLock(str(tmp_path)).acquire()
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with checkpoint.WorkdirLock(str(tmp_path)):
    pass
