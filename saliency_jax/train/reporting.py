"""What a person watching a run sees: the console, a progress line and TensorBoard.

Only process 0 of a multi-process run writes; the others get disabled writers, so callers need
no `if process_index == 0` of their own.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TextIO

import numpy as np


def quiet_library_logs() -> None:
  """Shows only warnings and errors of the libraries' logs (JAX, orbax, absl, TensorFlow).

  They log at INFO every backend probe and dozens of long lines per checkpoint, which would bury
  the run's own output (printed, not logged). Their logs, and this project's warnings, all go
  through Python's root logger, whose level (absl's verbosity, when absl's handler is
  installed, as under `absl.app.run`) is raised to WARNING here. TensorFlow's C++ INFO lines
  are turned off too, unless `TF_CPP_MIN_LOG_LEVEL` is set already.
  """
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger().setLevel(logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def _clock(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressBar:
  """One line per update: step, loss, images/s, elapsed and remaining time.

  On a terminal the line is redrawn in place; in a log file every update is a new line.
  The time left is estimated from the speed since the first update, so compilation of the
  first step does not inflate it. Our own rather than tqdm's: tqdm redraws with carriage
  returns in log files too, and cannot leave evaluations out of the rate.

  Args:
    total_steps: the step at which training ends.
    start_step: the step training starts (or resumes) from.
    batch_size: global examples per step, for images/s.
    enabled: False makes every method a no-op (processes other than 0).
    show_progress: False leaves the progress lines out; `message` lines are still written.
    stream: where to write (stdout by default).
    label: the run's name at the start of each progress line.
  """

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int, enabled: bool = True,
               show_progress: bool = True, stream: TextIO | None = None,
               label: str = "train"):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.enabled = enabled
    self.show_progress = enabled and show_progress
    self.label = label
    self.stream = stream or sys.stdout
    self._inplace = self.show_progress and self.stream.isatty()
    self._start_time = time.perf_counter()
    self._anchor: tuple[int, float] | None = None  # (step, time) of the first update.
    self._last = (start_step, self._start_time)

  def update(self, step: int, *, loss: float, extra: str = "") -> float:
    """Shows progress at `step`; returns the images/s since the previous update."""
    now = time.perf_counter()
    last_step, last_time = self._last
    rate = (step - last_step) * self.batch_size / max(now - last_time, 1e-9)
    self._last = (step, now)
    if self._anchor is None:
      self._anchor = (step, now)
      left = "?"
    else:
      anchor_step, anchor_time = self._anchor
      per_step = (now - anchor_time) / max(step - anchor_step, 1)
      left = _clock(per_step * (self.total_steps - step))
    if self.show_progress:
      width = len(str(self.total_steps))
      fraction = step / max(self.total_steps, 1)
      bar = "#" * int(20 * fraction) + "." * (20 - int(20 * fraction))
      line = (f"{self.label} [{bar}] {step:>{width}}/{self.total_steps} loss {loss:.4f} "
              f"{rate:7.1f} img/s elapsed {_clock(now - self._start_time)} left {left}"
              f"{'  ' + extra if extra else ''}")
      if self._inplace:
        self.stream.write("\r\x1b[K" + line)
      else:
        self.stream.write(line + "\n")
      self.stream.flush()
    return rate

  def skip(self, seconds: float) -> None:
    """Leaves `seconds` (an evaluation, say) out of the images/s and the time-left estimate."""
    step, last_time = self._last
    self._last = (step, last_time + seconds)
    if self._anchor is not None:
      self._anchor = (self._anchor[0], self._anchor[1] + seconds)

  def message(self, text: str) -> None:
    """Prints a line of its own (after the progress line on a terminal)."""
    if self.enabled:
      self.stream.write(("\n" if self._inplace else "") + text + "\n")
      self.stream.flush()

  def close(self) -> None:
    if self._inplace:
      self.stream.write("\n")
      self.stream.flush()


class MetricWriter:
  """TensorBoard scalars and images (tensorboardX) under `logdir`.

  tensorboardX rather than clu's `metric_writers`: clu's TensorBoard writer needs TensorFlow or
  PyTorch, and tensorboardX writes the same event files with neither.

  Args:
    logdir: the TensorBoard directory.
    enabled: False makes every method a no-op (processes other than 0).
  """

  def __init__(self, logdir: str, *, enabled: bool = True):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # Imported late: only process 0 writes.
      self._writer = SummaryWriter(logdir=logdir)

  def scalars(self, step: int, values: Mapping[str, float], *, prefix: str = "") -> None:
    if self._writer is None:
      return
    for name, value in values.items():
      self._writer.add_scalar(f"{prefix}{name}", float(value), global_step=step)

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """`image`: `[H, W, 3]` uint8."""
    if self._writer is not None:
      self._writer.add_image(tag, image, global_step=step, dataformats="HWC")

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is None:
      return
    writer, self._writer = self._writer, None
    try:
      writer.close()
    except OSError:
      # The pending events cannot be written (a full disk, say) and are dropped: tensorboardX
      # would otherwise try again at exit and print its threads' tracebacks.
      for file_writer in (writer.all_writers or {}).values():
        events = file_writer.event_writer
        events._worker.stop()  # pylint: disable=protected-access
        events._closed = True  # pylint: disable=protected-access
      raise
