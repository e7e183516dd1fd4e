"""Checkpoints: a save that fails for lack of space loses nothing; a workdir keeps its config."""
import json
import os
import resource
import signal

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
