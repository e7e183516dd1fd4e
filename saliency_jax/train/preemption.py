"""Stopping a run on SIGTERM or SIGINT without losing work: the signal sets a flag, the training
loop finishes the step in flight, saves it, waits for the save and raises `Stopped`.

SIGTERM is what schedulers (SLURM, Kubernetes) and TPU preemption send before they kill a job;
SIGINT is Ctrl-C. Before training starts nothing is unsaved: a signal received while the run
resumes stops it before its first step (and train.py stops at once on a signal that comes
earlier, while the model is built). Further signals while the stop's checkpoint is being
written are ignored, so that it is completed; SIGKILL still ends the process at once and loses
only the steps since the previous checkpoint.

Several processes: each may receive the signal at a different step (or only some of them
receive it), but all must save the same step and none may wait in a collective for one that
left. So there the flag is shared by an all-gather at the steps where the loop reads its
metrics anyway (`agreed`), and every process stops at the first such step after any of them
was signalled; a single process stops at the step in flight.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
  """The run was stopped by a signal; the message says what was saved.

  A `BaseException`, like `KeyboardInterrupt`: raised at once by `stop_at_once`, it must not
  be taken by an `except Exception` for an error of whatever it interrupted.

  Attributes:
    signum: the signal's number; `exit_code` is the shell's convention, 128 + signum.
  """

  def __init__(self, message: str, *, signum: int):
    super().__init__(message)
    self.signum = signum

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


def signal_name(signum: int) -> str:
  return signal.Signals(signum).name


def stop_at_once(signum: int, frame: FrameType | None) -> None:
  """A signal handler for where nothing is unsaved (before training): raises `Stopped`."""
  del frame
  raise Stopped(f"stopped by {signal_name(signum)} while starting, before training; the "
                f"workdir's checkpoints are unchanged; run the same command to resume.",
                signum=signum)


class StopSignals:
  """A context in which SIGTERM and SIGINT request a stop instead of ending the process.

  Outside the main thread (where Python cannot take signals) it does nothing and `requested`
  stays None.
  """

  def __init__(self):
    self.requested: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if self.requested is None:  # Later ones: already stopping, let the save complete.
      self.requested = signum

  def agreed(self, *, sync_point: bool) -> int | None:
    """The signal to stop for now, the same on every process, or None.

    Args:
      sync_point: whether every process calls this at this step (a multi-process run only
        compares flags there; between them it carries on).
    """
    if jax.process_count() == 1:
      return self.requested
    if not sync_point:
      return None
    from jax.experimental import multihost_utils
    flags = np.ravel(multihost_utils.process_allgather(np.int32(self.requested or 0)))
    signalled = sorted(int(f) for f in flags if f)
    return signalled[0] if signalled else None
