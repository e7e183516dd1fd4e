"""Fault injection into real train.py processes: every fault is followed by a resume that must
reach the uninterrupted run's final parameters, optimizer state, RNG and step bit for bit.

The faults: SIGKILL, SIGTERM and SIGINT at seeded random points (during a step, during an
asynchronous save, during an evaluation), a second signal while the stop's checkpoint is being
written, a broken newest checkpoint (a partial folder, an empty folder, a truncated data file),
a workdir on a read-only file system, a full disk (a small tmpfs the test mounts, filled up
to leave room for two checkpoints), and a second run started on a running workdir. The uninterrupted
reference run is made once per session (shared by the pytest-xdist workers).
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, final_state
from tiny_experiments import train_config_source

STEPS = 32
EVERY = 4  # Checkpoints at 4, 8, ..., 32, all kept.
EVAL_EVERY = 6  # Evaluations (and panels) at 6, 12, ..., 30 and the final one at 32.

CONFIG = train_config_source({
    "model.name": "uniform",  # The trainer's faults, not the model's: the smallest that trains.
    "data.synthetic.train_size": 32,
    "data.synthetic.eval_size": 192,  # 24 batches: a signal has time to land in one.
    "num_train_steps": STEPS, "blur_epochs": 0.0, "checkpoint_every_steps": EVERY,
    "keep_checkpoints": 8, "log_every_steps": 1, "eval_every_steps": EVAL_EVERY})

SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


@pytest.fixture(scope="module")
def program(train_program):
  """Runs on one device: each process starts faster. The sharded resume is the kill test's, in
  test_train_resume.py."""
  return train_program.with_devices(1)


@pytest.fixture(scope="module")
def reference(program):
  """(workdir, config file) of the uninterrupted run."""
  return program.reference("faults_reference", CONFIG)


def _assert_same_final_state(reference_dir, workdir):
  expected, got = final_state(reference_dir, STEPS), final_state(workdir, STEPS)
  paths = jax.tree_util.tree_flatten_with_path(expected)[0]
  assert len(paths) == len(jax.tree.leaves(got)) > 10
  for (path, a), b in zip(paths, jax.tree.leaves(got)):
    assert np.array_equal(a, b), jax.tree_util.keystr(path)


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _assert_same_results(reference_dir, workdir):
  """The final evaluation and the last interval's training metrics (not the speed) agree."""
  expected, got = _results(reference_dir), _results(workdir)
  assert got["eval"] == expected["eval"]
  assert got["train"] == expected["train"] and got["train"]
  assert got["images_per_sec"] > 0


def _complete_steps(workdir):
  directory = os.path.join(workdir, "checkpoints")
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(n) for n in names if n.isdigit())


def _copy_run(reference_dir, workdir, steps):
  """A workdir holding the reference's config and its checkpoints of `steps` only."""
  os.makedirs(os.path.join(workdir, "checkpoints"))
  shutil.copy(os.path.join(reference_dir, "config.json"), workdir)
  for step in steps:
    shutil.copytree(os.path.join(reference_dir, "checkpoints", str(step)),
                    os.path.join(workdir, "checkpoints", str(step)))


def _read(path):
  with open(path) as f:
    return f.read()


def _train_py_lines(text):
  return [line for line in text.splitlines() if line.startswith("train.py:")]


class _Interruption:
  """One train.py process of a workdir, signalled when a condition on its files holds."""

  def __init__(self, program, workdir, config_file, log, *overrides):
    self.workdir, self.log = workdir, log
    self.checkpoints = os.path.join(workdir, "checkpoints")
    self.resumed_from = max(_complete_steps(workdir), default=0)
    # What a killed predecessor left ahead of the resumed step would look like progress.
    if os.path.isdir(self.checkpoints):
      for name in os.listdir(self.checkpoints):
        if ".orbax-checkpoint-tmp" in name:
          shutil.rmtree(os.path.join(self.checkpoints, name))
    shutil.rmtree(os.path.join(workdir, "panels"), ignore_errors=True)
    self.process = program.start(workdir, config_file, *overrides, log=log)

  def stdout(self):
    return _read(f"{self.log}.out")

  def stderr(self):
    return _read(f"{self.log}.err")

  def wait_for(self, ready, what, timeout=240):
    deadline = time.monotonic() + timeout
    while not ready():
      assert self.process.poll() is None, (
          f"the run ended before {what}:\n{self.stdout()[-2000:]}\n{self.stderr()[-3000:]}")
      assert time.monotonic() < deadline, f"no {what} within {timeout} s"
      time.sleep(0.001)

  def reached_step(self, step):
    return re.search(rf"\b{step}/{STEPS} loss", self.stdout()) is not None

  def saving(self):
    """The step of a checkpoint being written now, or None."""
    try:
      names = os.listdir(self.checkpoints)
    except FileNotFoundError:
      return None
    steps = [int(n.split(".")[0]) for n in names if ".orbax-checkpoint-tmp" in n]
    steps = [s for s in steps if s > self.resumed_from]
    return steps[0] if steps else None

  def evaluating(self, step):
    # The panels of a step are drawn just before its evaluation starts.
    return os.path.exists(os.path.join(self.workdir, "panels", f"step_{step:07d}",
                                       "example_0.png"))

  def signal(self, signum, *, again_after=None):
    self.process.send_signal(signum)
    if again_after is not None:  # A second signal while the stop's checkpoint is written.
      time.sleep(again_after)
      try:
        self.process.send_signal(signum)
      except ProcessLookupError:
        pass
    return self.process.wait(timeout=240)

  def assert_stopped(self, signum, returncode):
    """The conventional exit code, one line saying what was saved, no traceback; returns it."""
    err = self.stderr()
    assert returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = _train_py_lines(err)
    assert len(lines) == 1, lines
    return lines[0]


def _interrupt(program, workdir, config_file, log, signame, point, rng, *, final=False):
  """Runs train.py once more in `workdir` and sends `signame` at `point` ("step", "save" or
  "eval": the next mid-run evaluation, or the final one if `final`); checks the stop."""
  run = _Interruption(program, workdir, config_file, log)
  start = run.resumed_from
  assert start < STEPS - 2 * EVERY or point == "eval", "the plan does not fit in the run"
  signum = SIGNALS[signame]
  again = rng.uniform(0.005, 0.05) if signum != signal.SIGKILL else None
  if point == "step":
    # During the step after `target`: its progress line, then a random fraction of a step.
    target = start + 1
    run.wait_for(lambda: run.reached_step(target), f"step {target}")
    time.sleep(rng.uniform(0.0, 0.02))
  elif point == "save":
    run.wait_for(lambda: run.saving() is not None, "an asynchronous save")
    target = run.saving() or EVERY * (start // EVERY + 1)
  else:
    ahead = [s for s in range(EVAL_EVERY, STEPS, EVAL_EVERY) if s > start]
    target = STEPS if final or not ahead else ahead[0]
    run.wait_for(lambda: run.evaluating(target), f"the evaluation of step {target}")
  returncode = run.signal(signum, again_after=again)
  if signum == signal.SIGKILL:
    assert returncode == -signal.SIGKILL
  else:
    line = run.assert_stopped(signum, returncode)
    if point == "eval" and target == STEPS:
      assert re.fullmatch(rf"train\.py: stopped by {signame} at the final evaluation; the final "
                          rf"checkpoint, of step {STEPS}, is saved in \S+; run the same command "
                          rf"to evaluate it and write results\.json\.", line), line
      stopped_at = STEPS
    else:
      match = re.fullmatch(rf"train\.py: stopped by {signame} at step (\d+); saved a "
                           rf"checkpoint of step (\d+) in \S+; run the same command to "
                           rf"resume\.", line)
      assert match and match[1] == match[2], line
      stopped_at = int(match[1])
      # The step in flight, the step whose save was in flight, the evaluated one (or one of
      # the next few, when the machine is so busy that the signal is sent late).
      assert target <= stopped_at <= target + {"step": 4, "save": 3, "eval": 3}[point], (
          point, target, line)
    assert max(_complete_steps(workdir)) == stopped_at
  assert not os.path.exists(os.path.join(workdir, "results.json"))


def _resume_to_the_end(program, workdir, config_file, reference_dir):
  done = program.run(workdir, config_file)
  assert done.returncode == 0, done.stderr[-3000:]
  _assert_same_final_state(reference_dir, workdir)
  _assert_same_results(reference_dir, workdir)
  return done


@pytest.mark.parametrize("point", ["step", "save"])
def test_signals_during_steps_or_saves_then_resume(program, reference, tmp_path, point):
  """Three processes of one run, each stopped by one of the signals (seeded random order and
  moments) during a step, or during an asynchronous save; then a resume."""
  reference_dir, config_file = reference
  rng = random.Random(f"14 {point}")
  order = list(SIGNALS)
  rng.shuffle(order)
  workdir = tmp_path / "run"
  for n, signame in enumerate(order):
    _interrupt(program, workdir, config_file, tmp_path / f"{n}_{signame}_{point}", signame,
               point, rng)
  _resume_to_the_end(program, workdir, config_file, reference_dir)


def test_signals_during_evaluations_then_resume(program, reference, tmp_path):
  """Three processes of one run, each stopped by one of the signals (seeded order) during an
  evaluation: the next mid-run one twice, then the final one; then a resume that evaluates and
  writes the results."""
  reference_dir, config_file = reference
  rng = random.Random(15)
  order = list(SIGNALS)
  rng.shuffle(order)
  workdir = tmp_path / "run"
  _copy_run(reference_dir, workdir, [8])  # Evaluations ahead: 12, 18, ..., the final one.
  for n, signame in enumerate(order):
    _interrupt(program, workdir, config_file, tmp_path / f"{n}_{signame}_eval", signame,
               "eval", rng, final=n == len(order) - 1)
  _resume_to_the_end(program, workdir, config_file, reference_dir)


def test_broken_newest_checkpoints_fall_back_to_the_newest_good_one(program, reference, tmp_path):
  reference_dir, config_file = reference
  workdir = tmp_path / "run"
  _copy_run(reference_dir, workdir, [8, 12, 16, 20])
  checkpoints = workdir / "checkpoints"
  # 20: a partial folder under the final name (a copy that stopped before the arrays).
  shutil.rmtree(checkpoints / "20" / "state" / "ocdbt.process_0")
  # 16: an empty folder.
  shutil.rmtree(checkpoints / "16")
  (checkpoints / "16").mkdir()
  # 12: its largest data file truncated to half.
  data_dir = checkpoints / "12" / "state" / "ocdbt.process_0" / "d"
  largest = max(data_dir.iterdir(), key=lambda p: p.stat().st_size)
  size = largest.stat().st_size
  os.truncate(largest, size // 2)

  done = _resume_to_the_end(program, workdir, config_file, reference_dir)
  notes = [line for line in done.stdout.splitlines() if "skipped the checkpoint" in line]
  assert len(notes) == 3, done.stdout[-3000:]
  for note, step, why in zip(notes, (20, 16, 12), ("data do not read", "directory is empty",
                                                   "data do not read")):
    assert f"skipped the checkpoint of step {step} " in note and why in note, note
    assert f"moved it to {checkpoints / str(step)}.broken" in note, note
  assert "resuming from step 8 " in done.stdout
  # Nothing was deleted: the broken folders are kept aside, the truncated file in its place.
  assert (checkpoints / "12.broken" / largest.relative_to(checkpoints / "12")).stat().st_size == (
      size // 2)
  assert (checkpoints / "16.broken").is_dir() and (checkpoints / "20.broken").is_dir()
  assert _complete_steps(workdir) == list(range(8, STEPS + 1, EVERY))


def _mount_tmpfs(path, size):
  path.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True, text=True)
  return done.returncode == 0, done.stderr.strip()


def _fill(directory, *, leave):
  """Writes a file into `directory` until `leave` bytes are free on its file system."""
  filler = os.path.join(directory, "filler")
  with open(filler, "wb") as f:
    f.write(b"\0" * max(shutil.disk_usage(directory).free - leave, 0))
  return filler


def _size(directory):
  return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_read_only_workdir_then_full_disk_then_resume(program, reference, tmp_path):
  """On a tmpfs the test mounts: first read-only (the run refuses to start and changes
  nothing), then writable with room for two more checkpoints (the run stops at the step whose
  save does not fit, in a few lines); after space is freed the same command resumes."""
  reference_dir, config_file = reference
  disk = tmp_path / "disk"
  mounted, why = _mount_tmpfs(disk, "32m")
  if not mounted:
    pytest.skip(f"mount -t tmpfs failed here ({why}); the file size limit test in "
                f"test_train_checkpoint.py covers a failing save")
  try:
    workdir = disk / "run"
    _copy_run(reference_dir, workdir, [8])
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    refused = program.run(workdir, config_file)
    assert refused.returncode == 1
    lines = _train_py_lines(refused.stderr)
    assert len(lines) == 1 and "cannot be written" in lines[0], refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before

    # Room for two and a half checkpoints: those of steps 12 and 16 fit, that of 20 does not.
    # Panels only at the end: the checkpoints are the only large files written mid-run.
    filler = _fill(disk, leave=int(2.5 * _size(workdir / "checkpoints" / "8")))
    run = _Interruption(program, workdir, config_file, tmp_path / "full",
                        f"--config.panel_every_steps={10 * STEPS}")
    returncode = run.process.wait(timeout=240)
    err = run.stderr()
    assert returncode == 1, err[-3000:]
    assert "Traceback" not in err and not re.search(r"^(E\d{4} |ERROR:)", err, re.M), err[-5000:]
    lines = _train_py_lines(err)
    assert len(lines) == 1 and re.fullmatch(
        rf"train\.py: Saving the checkpoint of step 20 in {re.escape(str(workdir))}/checkpoints "
        rf"failed \(the disk is full: \d+\.\d MB free, a checkpoint takes \d+\.\d MB\); the "
        rf"complete checkpoints \(steps \[8, 12, 16\]\) are intact and the newest one, step "
        rf"16, is where the same command resumes\.", lines[0]), err[-3000:]
    assert len([line for line in err.splitlines() if not line.startswith("I")]) <= 5, err
    # Reported at the step whose save failed (or the next, while that save ran), not later.
    assert not run.reached_step(22), run.stdout()[-1000:]
    os.remove(filler)
    _resume_to_the_end(program, workdir, config_file, reference_dir)
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_second_run_on_a_running_workdir_is_refused(program, reference, tmp_path):
  """A second run on a workdir in use fails in one line and changes nothing; the first one
  ends as if alone, and running its command again keeps its results."""
  reference_dir, config_file = reference
  workdir = tmp_path / "run"
  _copy_run(reference_dir, workdir, [16])
  first = _Interruption(program, workdir, config_file, tmp_path / "first")
  lock_file = workdir / "train.lock"
  first.wait_for(lambda: first.reached_step(17), "step 17")
  assert _read(lock_file).strip() == str(first.process.pid)
  # Frozen while the second run tries, so that it is running for sure.
  first.process.send_signal(signal.SIGSTOP)
  try:
    stored_config = _read(workdir / "config.json")
    entries = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    second = program.run(workdir, config_file)
    assert second.returncode == 1
    assert _train_py_lines(second.stderr) == [
        f"train.py: workdir {workdir} is in use by another training run (process "
        f"{first.process.pid} holds {lock_file}); wait for it to end or stop it, or pass "
        f"another --workdir."], second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    assert _read(workdir / "config.json") == stored_config
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == entries
  finally:
    first.process.send_signal(signal.SIGCONT)
  assert first.process.wait(timeout=240) == 0, first.stderr()[-3000:]
  _assert_same_final_state(reference_dir, workdir)
  _assert_same_results(reference_dir, workdir)

  # Running a finished workdir again reports it and keeps its results.json as it is.
  results = _read(workdir / "results.json")
  again = program.run(workdir, config_file)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"holds a finished run of {STEPS} steps" in again.stdout
  assert _read(workdir / "results.json") == results


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_signal_while_importing_ends_with_one_line(tmp_path, name):
  # Importing JAX, Flax and orbax takes seconds; the signal lands among those imports.
  process = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={tmp_path / 'run'}"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  time.sleep(1.0)
  assert process.poll() is None, "train.py ended before the signal was sent"
  process.send_signal(SIGNALS[name])
  stdout, stderr = process.communicate(timeout=60)
  assert process.returncode == 128 + SIGNALS[name], (process.returncode, stderr)
  assert stderr.strip() == (f"train.py: stopped by {name} while starting, before training; "
                            f"nothing was written."), stderr
  assert not (tmp_path / "run").exists()


def test_signal_while_exiting_ends_at_once_without_a_traceback(tmp_path):
  """A second SIGTERM can land while the libraries' exit handlers run, after train.py printed
  how training ended (the stop's, here a config error's, line). An exit handler registered
  before train.py's imports runs after theirs and sends it there, deterministically."""
  script = (f"import atexit, os, runpy, signal, sys, time\n"
            f"atexit.register(lambda: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))\n"
            f"sys.argv = ['train.py', '--workdir={tmp_path / 'run'}', '--config.batch_size=0']\n"
            f"runpy.run_path({os.path.join(ROOT, 'train.py')!r}, run_name='__main__')\n")
  done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  lines = _train_py_lines(done.stderr)
  assert len(lines) == 1 and "batch_size" in lines[0], lines
