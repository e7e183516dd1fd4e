r"""Trains and evaluates a model of saliency_jax: `python train.py --workdir=DIR [--config=...]`.

Without --config it runs the demo (configs/default.py): the saliency sampler and the uniform
baseline on the synthetic task, on whatever devices JAX finds. Any config field can be overridden:

  python train.py --workdir=runs/cub --config=configs/cub200.py \
      --config.batch_size=64 --config.data.data_dir=/data/tfds

Running the same command again resumes from the newest checkpoint in the workdir.
"""
import os
import signal
import sys


def _stopped_while_importing(signum, frame) -> None:
  del frame
  print(f"train.py: stopped by {signal.Signals(signum).name} while starting, before training; "
        f"nothing was written.", file=sys.stderr, flush=True)
  # Not `sys.exit`: a library's `except BaseException` around an import could swallow it.
  os._exit(128 + signum)


# The libraries take seconds to import: a Ctrl-C or SIGTERM then ends the program with one line,
# not a traceback from inside them. `main` installs the trainer's handlers.
for _signum in (signal.SIGTERM, signal.SIGINT):
  signal.signal(_signum, _stopped_while_importing)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from saliency_jax import train  # noqa: E402
from saliency_jax.train import preemption  # noqa: E402
from saliency_jax.train import reporting  # noqa: E402

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, panels and results.")
  flags.mark_flag_as_required("workdir")
  flags.DEFINE_bool("log_libraries", False,
                    "Show the libraries' INFO logs too (JAX, orbax, absl; absl's --verbosity "
                    "then applies, as it does when given). By default the console shows this "
                    "program's own lines and the libraries' warnings and errors only.")
  try:
    # Loads the default config (and applies --config.* overrides to it when --config is absent).
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                    "Experiment config file (configs/*.py[:argument]).",
                                    lock_config=True)
  except (AttributeError, KeyError) as error:
    _unknown_field(error)


def _unknown_field(error: Exception) -> None:
  overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
  sys.exit(f"train.py: unknown config field {error} in {' '.join(overrides)}; see the config "
           f"file's fields (saliency_jax.train.base_config()).")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a misspelt `--config.FIELD` reported without a traceback."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as error:  # Raised while applying the overrides.
    _unknown_field(error)


def _exit_at_once(signum, frame) -> None:
  """Once training has returned or stopped, everything is saved and said: a further signal while
  the libraries' exit handlers run (JAX's waits for its runtime) ends the process at once, with
  no traceback from inside them."""
  del frame
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(128 + signum)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not (flags.FLAGS.log_libraries or flags.FLAGS["verbosity"].present):
    reporting.quiet_library_logs()
  # Until the trainer takes them over (once the workdir is locked), SIGTERM and SIGINT stop at
  # once: nothing has been trained that a checkpoint would keep.
  for signum in preemption.SIGNALS:
    signal.signal(signum, preemption.stop_at_once)
  try:
    try:
      train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    finally:  # Until the line below says how training ended, a further signal is not taken.
      for signum in preemption.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
  except (train.ConfigError, train.NonFiniteLossError, train.CheckpointError) as error:
    sys.exit(f"train.py: {error}")
  except train.ProcessLostError as error:
    print(f"train.py: {error}. {' '.join(error.__notes__)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Not `sys.exit`: JAX's exit handler would wait for the lost process at a shutdown barrier
    # until its heartbeat timeout, then abort with a C++ stack trace.
    os._exit(1)
  except train.Stopped as stop:  # SIGTERM or SIGINT, after saving the current step.
    print(f"train.py: {stop}", file=sys.stderr, flush=True)
    sys.exit(stop.exit_code)
  except OSError as error:  # A missing file; or, once training, a full disk writing logs.
    # The trainer notes what was saved only where a checkpoint exists.
    notes = " ".join(getattr(error, "__notes__", ()))
    text = str(error) if str(error).endswith(".") else f"{error}."  # OS messages lack the stop.
    sys.exit(f"train.py: {text}" + (f" {notes}" if notes else ""))
  finally:
    for signum in preemption.SIGNALS:
      signal.signal(signum, _exit_at_once)


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=_parse_flags)
