"""Multi-process training: real train.py processes connected by jax.distributed over 127.0.0.1.

Every layout here has 4 CPU devices in all: one process of 4 (the reference), two processes of 2
and four processes of 1. They must train the same model (each device sees the same examples in
the same order), write each checkpoint once, resume each other's checkpoints, stop in bounded
time when a process is lost, and refuse processes that disagree, before touching the workdir.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, final_state
from saliency_jax.train import distributed
from tiny_experiments import train_config_source

STEPS = 4
EVERY = 2
DEVICES = 4

def config_source(steps: int, every: int) -> str:
  # Blurred warm-up throughout: the blur draws one size per row of the global batch, so a process
  # that fed other rows than the one-process run would train on other inputs from step 1.
  return train_config_source({
      "data.synthetic.train_size": 32, "data.synthetic.eval_size": 20,
      "num_train_steps": steps, "blur_epochs": 100.0, "optimizer.learning_rate": 0.005,
      # Constant (the step schedule would not decay within these steps either): the train step
      # then does not depend on the run's length, so runs of STEPS and LONG_STEPS share their
      # compilations through the persistent cache.
      "optimizer.schedule": "constant",
      "checkpoint_every_steps": every, "keep_checkpoints": 3, "log_every_steps": 1,
      "eval_every_steps": steps, "heartbeat_timeout_seconds": 10,
      "distributed_timeout_seconds": 60})


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(train_program, devices_per_process):
  env = dict(train_program.env)
  env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                            env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices_per_process}"
  return env


def _start(train_program, workdir, config_file, processes, *overrides, port=None, log):
  """Starts `processes` processes of one run; returns their Popens (output in log.<i>.*)."""
  port = port or _free_port()
  env = _env(train_program, DEVICES // processes)
  popens = []
  for i in range(processes):
    flags = [] if processes == 1 else [
        f"--config.num_processes={processes}", f"--config.process_id={i}",
        f"--config.coordinator_address=127.0.0.1:{port}"]
    command = train_program.command(workdir, config_file, *flags, *overrides)
    with open(f"{log}.{i}.out", "w") as out, open(f"{log}.{i}.err", "w") as err:
      popens.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                     stderr=err))
  return popens


def _wait(popens, log, timeout=240):
  deadline = time.monotonic() + timeout
  codes = []
  for process in popens:
    try:
      codes.append(process.wait(timeout=max(deadline - time.monotonic(), 1)))
    except subprocess.TimeoutExpired:
      for p in popens:
        p.kill()
      pytest.fail(f"multi-process run still running after {timeout} s: {_tail(log, len(popens))}")
  return codes


def _tail(log, processes):
  return "\n".join(f"--- process {i}:\n" + open(f"{log}.{i}.err").read()[-2000:]
                   for i in range(processes))


def _run(train_program, workdir, config_file, processes, *overrides, log):
  popens = _start(train_program, workdir, config_file, processes, *overrides, log=log)
  codes = _wait(popens, log)
  assert codes == [0] * processes, _tail(log, processes)


# A run long enough that its processes are still training when one of them is signalled.
LONG_STEPS = 12


def _two_processes_past_a_checkpoint(train_program, tmp_path):
  """Starts two processes of a LONG_STEPS run; returns once its first checkpoint exists."""
  config_file = tmp_path / "config.py"
  config_file.write_text(config_source(LONG_STEPS, EVERY))
  workdir, log = tmp_path / "run", tmp_path / "log"
  popens = _start(train_program, workdir, config_file, 2, log=log)
  deadline = time.monotonic() + 180
  while not (workdir / "checkpoints" / str(EVERY)).exists():
    assert time.monotonic() < deadline and popens[0].poll() is None, _tail(log, 2)
    time.sleep(0.1)
  return config_file, workdir, log, popens


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("multiprocess") / "config.py"
  path.write_text(config_source(STEPS, EVERY))
  return path


@pytest.fixture(scope="module")
def reference(train_program, config_file):
  """The workdir of one process with all 4 devices."""
  workdir = config_file.parent / "one_process"
  _run(train_program, workdir, config_file, 1, log=config_file.parent / "one_process")
  return workdir


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


_SHIFT_INVARIANT = "['saliency_net']['head']['bias']"


def _assert_same_training(reference_dir, workdir):
  """The same training, to float rounding (the all-reduce runs over gloo, not in-process)."""
  for step, rtol in ((EVERY, 1e-4), (STEPS, 1e-3)):
    expected, got = final_state(reference_dir, step), final_state(workdir, step)
    paths = jax.tree_util.tree_flatten_with_path(expected)[0]
    assert len(paths) == len(jax.tree.leaves(got)) > 10
    for (path, a), b in zip(paths, jax.tree.leaves(got)):
      a, b = np.asarray(a), np.asarray(b)
      name = jax.tree_util.keystr(path)
      # The saliency head's bias adds one constant to every logit, which the softmax ignores:
      # its gradient is zero in exact arithmetic and float32 rounding noise in practice (6e-9
      # seen with XLA's default CPU emitters, 2.1e-8 with the older ones the tests compile with,
      # in a momentum trace of 9.4e-6 that is all weight decay), so it is held to that noise's
      # scale, absolutely, rather than to a relative error of that noise.
      atol = 1e-7 if _SHIFT_INVARIANT in name else rtol * np.abs(a).max(initial=0.0)
      np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=f"step {step}: {name}")
  want, have = _results(reference_dir)["eval"], _results(workdir)["eval"]
  # The target: evaluation loss within 0.01 %; every example counted once.
  assert abs(have["loss"] - want["loss"]) <= 1e-4 * abs(want["loss"]), (have, want)
  assert have["count"] == want["count"] == 20


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_train_what_one_process_trains(train_program, reference, config_file, tmp_path,
                                                 processes):
  workdir = tmp_path / "run"
  _run(train_program, workdir, config_file, processes, log=tmp_path / "log")
  _assert_same_training(reference, workdir)
  # Each checkpoint written once, into the one workdir (no per-process copies or leftovers).
  assert sorted(os.listdir(workdir / "checkpoints"), key=int) == [str(EVERY), str(STEPS)]
  # Only process 0 reports.
  for i in range(1, processes):
    assert "Results (evaluation split" not in open(tmp_path / f"log.{i}.out").read()


def test_a_lost_process_stops_the_others_and_a_resume_takes_another_layout(
    train_program, tmp_path):
  steps = LONG_STEPS
  config_file, workdir, log, popens = _two_processes_past_a_checkpoint(train_program, tmp_path)
  popens[1].send_signal(signal.SIGKILL)
  killed = time.monotonic()
  code = _wait(popens[:1], log, timeout=120)[0]
  # Bounded: the next collective fails at once; at worst the heartbeat timeout (10 s) ends it.
  assert time.monotonic() - killed < 60 and code != 0, _tail(log, 1)
  saved = max(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
  assert saved < steps
  # Whichever notices first: the next collective fails (the trainer's one line, no traceback),
  # or JAX's coordination service ends the process with its own message.
  err = open(f"{log}.0.err").read()
  lines = [line for line in err.splitlines() if line.startswith("train.py:")]
  if lines:
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"train\.py: process 0 of 2 lost contact with another process of this run, "
                    r"which died, was killed or lost its network \(.+\)\. The newest "
                    rf"checkpoint, of step {saved} in .+, is kept; fix the cause and run the same "
                    r"command to resume\.$", lines[0]), lines[0]
  else:
    assert "another task died" in err, err
  # Started again, as one process of all four devices: resumes from the newest checkpoint.
  _run(train_program, workdir, config_file, 1, log=tmp_path / "resumed")
  assert f"resuming from step {saved}" in open(tmp_path / "resumed.0.out").read()
  assert _results(workdir)["steps"] == steps
  assert (workdir / "checkpoints" / str(steps)).exists()


def test_processes_with_different_configs_are_refused_before_the_workdir(
    train_program, config_file, tmp_path):
  workdir, log, port = tmp_path / "run", tmp_path / "log", _free_port()
  env = _env(train_program, 2)
  popens = []
  for i, seed in enumerate((0, 1)):
    command = train_program.command(
        workdir, config_file, "--config.num_processes=2", f"--config.process_id={i}",
        f"--config.coordinator_address=127.0.0.1:{port}", f"--config.seed={seed}")
    with open(f"{log}.{i}.out", "w") as out, open(f"{log}.{i}.err", "w") as err:
      popens.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                     stderr=err))
  assert _wait(popens, log, timeout=60) == [1, 1]
  for i in range(2):
    err = open(f"{log}.{i}.err").read()
    assert "the config of process 1 differs from process 0's (seed: 1 there, 0 on process 0)" \
        in err, err
    assert "Traceback" not in err
  assert not workdir.exists()


def test_an_unreachable_coordinator_is_reported_in_bounded_time(train_program, config_file,
                                                                tmp_path):
  workdir = tmp_path / "run"
  began = time.monotonic()
  done = subprocess.run(
      train_program.command(workdir, config_file, "--config.num_processes=2",
                            "--config.process_id=1",
                            f"--config.coordinator_address=127.0.0.1:{_free_port()}",
                            "--config.distributed_timeout_seconds=3"),
      cwd=ROOT, env=_env(train_program, 2), capture_output=True, text=True,
      timeout=60)
  assert done.returncode == 1 and time.monotonic() - began < 45
  assert "Process 1: no coordinator answered at 127.0.0.1:" in done.stderr, done.stderr
  assert "Traceback" not in done.stderr and not workdir.exists()


@pytest.mark.parametrize("overrides,message", [
    (("--config.num_processes=2", "--config.process_id=2",
      "--config.coordinator_address=127.0.0.1:1"), "config.process_id"),
    (("--config.num_processes=2", "--config.process_id=0",
      "--config.coordinator_address=localhost"), "config.coordinator_address"),
])
def test_bad_process_flags_are_refused_before_connecting(train_program, config_file, tmp_path,
                                                         overrides, message):
  done = subprocess.run(train_program.command(tmp_path / "run", config_file, *overrides),
                        cwd=ROOT, env=_env(train_program, 2),
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 1 and message in done.stderr, done.stderr
  assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_sigterm_to_one_process_stops_all_at_one_saved_step_and_they_resume(train_program,
                                                                            tmp_path):
  # A scheduler preempting one host: the processes agree on the stop at their next sync point
  # (a log step, every step here), all save that step together and exit with SIGTERM's code.
  steps = LONG_STEPS
  config_file, workdir, log, popens = _two_processes_past_a_checkpoint(train_program, tmp_path)
  popens[1].send_signal(signal.SIGTERM)
  assert _wait(popens, log, timeout=120) == [128 + signal.SIGTERM] * 2, _tail(log, 2)
  message = re.search(r"train\.py: stopped by SIGTERM at step (\d+); saved a checkpoint of step "
                      r"(\d+)", open(f"{log}.0.err").read())
  assert message and message[1] == message[2], _tail(log, 2)
  stopped = int(message[1])
  assert EVERY <= stopped < steps
  saved = sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
  assert saved[-1] == stopped, saved
  _run(train_program, workdir, config_file, 2, log=tmp_path / "resumed")
  assert f"resuming from step {stopped}" in open(tmp_path / "resumed.0.out").read()
  assert _results(workdir)["steps"] == steps


def test_a_collective_without_its_peer_is_a_lost_process(monkeypatch):
  # The error text is Gloo's when the other process of a CPU run was killed (seen in the test
  # above); a memory error of a multi-process run, or any error of one process, stays as it is.
  error = jax.errors.JaxRuntimeError(
      "UNKNOWN: Gloo all-reduce failed: [pair.cc:538] Read error [127.0.0.1]:186: Connection "
      "reset by peer\nmore detail")
  assert distributed.lost_process(error) is None  # One process here.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  lost = distributed.lost_process(error)
  assert isinstance(lost, distributed.ProcessLostError)
  assert str(lost) == ("process 0 of 2 lost contact with another process of this run, which "
                       "died, was killed or lost its network (UNKNOWN: Gloo all-reduce failed: "
                       "[pair.cc:538] Read error [127.0.0.1]:186: Connection reset by peer)")
  assert distributed.lost_process(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory")) \
      is None
  assert distributed.lost_process(ValueError("Connection reset")) is None
