"""The progress line (saliency_jax.train.reporting.ProgressBar) written to a log file."""
import io
import re

from saliency_jax.train import reporting


def _bar(**options):
  stream = io.StringIO()  # Not a terminal: every update is a line of its own.
  return reporting.ProgressBar(total_steps=10, start_step=0, batch_size=4, stream=stream,
                               label="run", **options), stream


def test_progress_lines_and_messages():
  bar, stream = _bar()
  bar.message("[run] starting")
  assert bar.update(5, loss=0.5) > 0
  bar.update(10, loss=0.25)
  bar.close()
  lines = stream.getvalue().splitlines()
  assert lines[0] == "[run] starting"
  assert re.match(r"run \[##########\.{10}\]  5/10 loss 0\.5000 +[\d.]+ img/s elapsed 0:00 "
                  r"left \?$", lines[1]), lines[1]
  assert lines[2].startswith("run [####################] 10/10 loss 0.2500")
  assert len(lines) == 3


def test_without_the_progress_line_messages_are_still_written():
  bar, stream = _bar(show_progress=False)
  bar.update(5, loss=0.5)
  bar.message("[run] step 5: eval top-1 50.00%")
  bar.close()
  assert stream.getvalue() == "[run] step 5: eval top-1 50.00%\n"


def test_a_disabled_bar_writes_nothing():
  # Processes other than 0 of a multi-process run.
  bar, stream = _bar(enabled=False)
  bar.message("[run] starting")
  bar.update(5, loss=0.5)
  bar.close()
  assert stream.getvalue() == ""
