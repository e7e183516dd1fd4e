"""Test session setup, and the `train_program` fixture that runs train.py in subprocesses.

Eight host CPU devices are forced before JAX is imported so that sharding tests run on a real
8-device mesh; single-device tests simply use the first device. XLA compiles without LLVM
optimisation, into one compilation cache per session (see below).
"""
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

# Appended to any XLA_FLAGS the caller set, which would otherwise leave the tests one device.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
# The tests' programs are tiny and compiled once or twice each, so LLVM's optimisation of the
# CPU code costs far more than it saves: without it the suite takes a third less time. The
# numbers differ from optimised code by float32 rounding only (the tests' tolerances allow for
# it); set the flag yourself to test the optimised code.
if "--xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"


def _jaxlib_knows(flag: str) -> bool:
  """Whether the installed jaxlib's XLA defines `flag` (it aborts on flags it does not know)."""
  import importlib.util
  import mmap
  spec = importlib.util.find_spec("jaxlib")
  library = os.path.join(os.path.dirname(spec.origin), "libjax_common.so") if spec else ""
  if not os.path.isfile(library):
    return False
  with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
    return data.find(flag.encode()) >= 0


# XLA's older CPU fusion emitters compile the tests' programs in two thirds of the time the new
# ones take (a tiny training step: 2.6 s against 3.5 s), for the same numbers to float32 rounding.
if ("xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"]
    and _jaxlib_knows("xla_cpu_use_fusion_emitters")):
  os.environ["XLA_FLAGS"] += " --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session's processes (pytest-xdist workers inherit
# the controller's environment): many tests build the same tiny models, and a program compiled
# by one is then read from disk by the others. Results are the same with or without it. A cache
# directory the caller set is used as it is, and kept.
_SESSION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _SESSION_CACHE = tempfile.mkdtemp(prefix="saliency_jax_tests_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
# TensorFlow (used by tfds when preparing data) must not print or grab accelerators in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_unconfigure(config):
  del config
  if _SESSION_CACHE is not None:  # Only the process that created it (the controller).
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def hide_torch(env: dict, base) -> dict:
  """`env` for a train.py process that runs as in the environment `make demo` installs:
  requirements.txt has no PyTorch, which tensorboardX imports if it can (a second per process).

  `base`: a directory for the module that stands in for PyTorch and raises its ImportError.
  """
  hidden = os.path.join(base, "without_torch")
  os.makedirs(os.path.join(hidden, "torch"), exist_ok=True)
  module = os.path.join(hidden, "torch", "__init__.py")
  # Written whole under another name and renamed: another worker's process may be importing it.
  with tempfile.NamedTemporaryFile("w", dir=hidden, delete=False) as f:
    f.write('raise ImportError("PyTorch is hidden from this run")\n')
  os.replace(f.name, module)
  env = dict(env)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (hidden, env.get("PYTHONPATH", "")) if p)
  return env


class TrainProgram:
  """Runs `train.py` in real subprocesses, sharing one JAX compilation cache between them.

  Every run compiles the same programs: the persistent cache saves the later ones the compile
  time (results are the same with or without it). The subprocesses see this session's
  environment (the forced 8 host CPU devices included), without PyTorch (`hide_torch`).

  Args:
    base: a directory for the cache and the reference runs, shared by the pytest-xdist
      workers of one session.
  """

  def __init__(self, base):
    self.base = base
    self.env = hide_torch(os.environ, base)
    self.env.update(JAX_COMPILATION_CACHE_DIR=str(base / "jax_cache"),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

  def with_devices(self, count):
    """A copy whose runs see `count` host CPU devices (one program compiles faster)."""
    program = TrainProgram.__new__(TrainProgram)
    program.base, program.env = self.base, dict(self.env)
    flags = [f for f in program.env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    program.env["XLA_FLAGS"] = " ".join(
        [*flags, f"--xla_force_host_platform_device_count={count}"])
    return program

  def command(self, workdir, config_file, *overrides):
    return [sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
            f"--config={config_file}", *overrides]

  def run(self, workdir, config_file, *overrides, timeout=300):
    """Runs to the end; returns the `subprocess.CompletedProcess` (text output)."""
    return subprocess.run(self.command(workdir, config_file, *overrides), cwd=ROOT,
                          env=self.env, capture_output=True, text=True, timeout=timeout)

  def start(self, workdir, config_file, *overrides, log):
    """Starts a run whose stdout and stderr go to `log`.out and `log`.err; returns the Popen."""
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
      return subprocess.Popen(self.command(workdir, config_file, *overrides), cwd=ROOT,
                              env=self.env, stdout=out, stderr=err)

  def reference(self, name, config_text):
    """The workdir of an uninterrupted run of `config_text`, run once per session.

    The first pytest-xdist worker that asks runs it, under a file lock; the others wait for
    it and reuse it.
    """
    workdir = self.base / name
    config_file = self.base / f"{name}_config.py"
    with open(self.base / f"{name}.lock", "w") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not (workdir / "results.json").exists():
        config_file.write_text(config_text)
        done = self.run(workdir, config_file)
        assert done.returncode == 0, done.stderr[-3000:]
    return workdir, config_file


def final_state(workdir, step):
  """The train state of checkpoint `step` in `workdir`, as arrays (orbax's own reader).

  Read onto this process's first device, whatever devices (or processes) wrote it.
  """
  import jax
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, "item_metadata", None) or metadata
  tree = getattr(tree, "tree", tree)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return checkpointer.restore(
      path, restore_args=jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), tree))


@pytest.fixture(scope="session")
def train_program(tmp_path_factory):
  """A `TrainProgram` whose cache and reference runs all workers of the session share."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):  # Each worker's basetemp is below a shared one.
    base = base.parent
  base = base / "train_program"
  base.mkdir(exist_ok=True)
  return TrainProgram(base)
