"""What `train.py` prints: the program's own lines, no library INFO logs unless asked for.

A real `train.py` process trains a tiny uniform model on an image folder with one unreadable
evaluation image, and saves a checkpoint every step (orbax logs dozens of INFO lines per save,
JAX one per backend it cannot start): at the default verbosity no absl-format INFO line may
appear, the run's own lines and the loader's warning about the unreadable image must. Then
`--log_libraries` brings the library logs back.
"""
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import ROOT, hide_torch

# absl's log line prefix: severity letter, MMDD, time, thread id, file:line].
ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^ ]+:\d+\] ")


def _image_folder(root) -> str:
  rng = np.random.default_rng(0)
  for split, count in (("train", 4), ("val", 2)):
    for label in ("a", "b"):
      folder = root / split / label
      folder.mkdir(parents=True)
      for i in range(count):
        Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")
  (root / "val" / "a" / "0.png").write_bytes(b"not a png")  # The loader warns and masks it.
  return str(root)


def _train(workdir, data_dir, *flags):
  # As a user runs it: JAX probes every backend it knows (and logs the ones it cannot start),
  # on one host device, without PyTorch. The session's other XLA flags (no LLVM optimisation)
  # stay: they change the compile time, not what is printed.
  env = hide_torch(os.environ, workdir.parent)
  env.pop("JAX_PLATFORMS", None)
  env["XLA_FLAGS"] = " ".join(flag for flag in env.get("XLA_FLAGS", "").split()
                              if not flag.startswith("--xla_force_host_platform_device_count"))
  command = [
      sys.executable, os.path.join(ROOT, "train.py"), f"--workdir={workdir}",
      "--config=configs/uniform.py", "--config.data.name=image_folder",
      f"--config.data.data_dir={data_dir}", "--config.data.image_size=64",
      "--config.data.eval_resize=64", "--config.model.task_size=32",
      "--config.model.low_res_size=32", "--config.batch_size=4", "--config.num_train_steps=2",
      "--config.checkpoint_every_steps=1", "--config.log_every_steps=1", *flags]
  return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_default_console_shows_no_library_info_and_keeps_warnings(tmp_path):
  data_dir = _image_folder(tmp_path / "images")
  workdir = tmp_path / "run"
  result = _train(workdir, data_dir)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = (result.stdout + result.stderr).splitlines()
  info = [line for line in lines if (match := ABSL_LINE.match(line)) and match[1] == "I"]
  assert not info, info[:5]
  assert not [line for line in lines if "Unable to initialize backend" in line]
  # The program's own lines: the run's header, progress, evaluation and summary.
  assert "[uniform] uniform (task net resnet_tiny at 32px) on image_folder" in result.stdout
  assert "uniform [####################] 2/2" in result.stdout
  assert "Results (evaluation split" in result.stdout
  # Warnings still show, the data's among them.
  warnings = [line for line in result.stderr.splitlines()
              if (match := ABSL_LINE.match(line)) and match[1] == "W"]
  assert any("Masking out unreadable evaluation record" in line for line in warnings), warnings
  assert os.path.isfile(workdir / "checkpoints" / "2" / "_CHECKPOINT_METADATA")

  # --log_libraries: the libraries' INFO logs are back (orbax's, opening the same checkpoints;
  # the run stops at once, its seed is not the stored config's).
  again = _train(workdir, data_dir, "--config.seed=1", "--log_libraries")
  assert again.returncode != 0 and "another config" in again.stderr, again.stderr[-2000:]
  info = [line for line in again.stderr.splitlines()
          if (match := ABSL_LINE.match(line)) and match[1] == "I"]
  assert any("checkpoint" in line.lower() for line in info), again.stderr[-2000:]
  assert "Traceback" not in again.stderr

  # A missing image folder: one sentence naming the folder, nothing created.
  missing = _train(tmp_path / "never", tmp_path / "nowhere")
  assert missing.returncode != 0 and "Traceback" not in missing.stderr
  assert missing.stderr.strip().splitlines()[-1] == (
      f"train.py: image_folder: no folder {str(tmp_path / 'nowhere' / 'train')!r}. Set "
      f"data.data_dir to a folder holding train/ and val/, each with one sub-folder of images "
      f"per class."), missing.stderr[-2000:]
  assert not os.path.exists(tmp_path / "never")
