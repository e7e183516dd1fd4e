"""Benchmark: images/s the input pipeline delivers, per number of worker processes.

Two workloads, each timed for every `--workers` value after a warm-up batch:
- jpeg: 800x800 JPEG files in an image folder (written first, into a temporary directory),
  decoded, random-resized-cropped to 800x800 and flipped, as the paper's training pipeline; the
  batches arrive as global uint8 arrays on the first device (what the trainer receives).
- synthetic: the procedural zoom task generated on the fly (the demo's default, 512x512).

    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --workers=0,1,2,4,8 --seconds=20

Writes benchmarks/results/input_pipeline_cpu.json (the pipeline runs on the host's CPUs).
"""

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402
from saliency_jax import data  # noqa: E402


def write_jpegs(root: str, count: int, size: int, seed: int = 0) -> None:
  """`count` photo-like JPEGs (smooth colour field + texture noise) in two class folders."""
  rng = np.random.default_rng(seed)
  for index in range(count):
    folder = os.path.join(root, "train", f"class{index % 2}")
    os.makedirs(folder, exist_ok=True)
    knots = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(knots).resize((size, size), Image.BICUBIC), np.int16)
    noise = rng.normal(0, 18, (size, size, 1)).astype(np.int16)
    image = np.clip(field + noise, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(os.path.join(folder, f"{index:04d}.jpg"), quality=90)
  os.makedirs(os.path.join(root, "val", "class0"), exist_ok=True)


def time_loader(cfg: dict, *, batch_size: int, seconds: float) -> dict:
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  start = time.perf_counter()
  loader = data.make_loader(cfg, split="train", global_batch_size=batch_size, mesh=mesh, seed=0)
  stream = iter(loader)
  jax.block_until_ready(next(stream))  # Warm-up: worker start, first batch.
  first = time.perf_counter() - start
  count, begin = 0, time.perf_counter()
  while time.perf_counter() - begin < seconds:
    jax.block_until_ready(next(stream))
    count += batch_size
  elapsed = time.perf_counter() - begin
  loader.close()
  return {"images_per_s": count / elapsed, "images": count, "seconds": elapsed,
          "first_batch_s": first}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per setting")
  parser.add_argument("--num_images", type=int, default=64, help="distinct JPEG files")
  parser.add_argument("--image_size", type=int, default=800)
  parser.add_argument("--workloads", default="jpeg,synthetic")
  parser.add_argument("--output", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results", "input_pipeline_cpu.json"))
  args = parser.parse_args()
  workers = [int(w) for w in args.workers.split(",")]
  results = {"environment": common.environment(), "host": platform.node(),
             "batch_size": args.batch_size, "command": "python benchmarks/input_pipeline.py "
             + " ".join(sys.argv[1:]), "runs": []}
  with tempfile.TemporaryDirectory() as root:
    workloads = args.workloads.split(",")
    if "jpeg" in workloads:
      write_jpegs(root, args.num_images, args.image_size)
    for workload in workloads:
      for count in workers:
        if workload == "jpeg":
          cfg = {"name": "image_folder", "data_dir": root, "image_size": args.image_size,
                 "num_workers": count, "prefetch": 2}
        else:
          cfg = {"name": "synthetic", "image_size": 512, "num_workers": count, "prefetch": 2}
        run = time_loader(cfg, batch_size=args.batch_size, seconds=args.seconds)
        run.update(workload=workload, workers=count)
        results["runs"].append(run)
        print(f"{workload:9s} workers={count}: {run['images_per_s']:7.1f} images/s "
              f"(first batch after {run['first_batch_s']:.1f} s)", flush=True)
  files.write_json(args.output, results)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
