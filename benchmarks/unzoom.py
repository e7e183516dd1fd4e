"""Benchmark: zoom and unzoom ops at the paper's sizes, and the anti-aliasing's accuracy.

Times, interleaved in one run (medians over the repetitions, `common.interleaved_medians`):
- grid_sample: plain bilinear sampling, uint8 batch 32 x 800 x 800 x 3 -> 224 x 224, with a
  224 x 224 attraction grid from random 31 x 31 logits (what the sampler layer does);
- grid_sample antialias: the same with `antialias=True` (on the CPU the forward value of
  `ops.native`'s fused kernel when it could be built), and the same by its XLA formulation (what
  GPUs and TPUs run, and the CPU without the kernels);
- invert_grid 31 -> 224: the exact inverse of the 31 x 31 attraction grid on a 224 x 224 source
  frame (the general path: the kernel on the CPU), the XLA formulation of its lattice solve, and
  the inverse of the axis-aligned attraction grid by its fast path;
- unwarp stride 8: a 28 x 28 x 256 float32 feature map of the warped image back to 28 x 28 of the
  source (`source_shape=(800, 800)`) through the 224 x 224 grid.
Accuracy (not timed): on a zone plate, the RMS error against a supersampled reference (the mean
of 16 x 16 bilinear point samples over each output pixel's Jacobian footprint) of plain and
anti-aliased sampling, for a uniform grid at 8x downsampling and for a peaked attraction grid.

  python benchmarks/unzoom.py               # the paper's sizes, 7 repetitions
  python benchmarks/unzoom.py --quick       # tiny sizes, 2 repetitions: a smoke test only
Writes benchmarks/results/unzoom_<backend>.json (with the environment).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import saliency_jax as sj  # noqa: E402
from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402
from saliency_jax.ops import antialias  # noqa: E402
from saliency_jax.ops import inverse  # noqa: E402
from saliency_jax.ops import native  # noqa: E402
from tests.references.supersampling import supersampled, zone_plate  # noqa: E402

# (batch, image side, output side, grid side, feature stride, feature channels)
SIZES = {"paper": (32, 800, 224, 31, 8, 256), "quick": (2, 64, 32, 7, 8, 8)}


def antialias_errors(size: int, out: int) -> dict:
  """RMS errors of plain and anti-aliased sampling against the supersampled reference."""
  image = zone_plate(size)
  ys, xs = np.meshgrid(np.linspace(-1, 1, out), np.linspace(-1, 1, out), indexing="ij")
  uniform = np.stack([xs, ys], -1)[None].astype(np.float32)
  saliency = np.full((1, 15, 15), 0.02, np.float32)
  saliency[0, 4:7, 8:11] = 1.0
  peaked = np.asarray(sj.attraction_grid(saliency / saliency.sum(), (3 * out // 2, 3 * out // 2)))
  results = {}
  for name, grid in (("uniform", uniform), ("peaked", peaked)):
    reference = supersampled(image, grid)
    errors = {}
    for label, smooth in (("plain", False), ("antialias", True)):
      sampled = np.asarray(sj.grid_sample(image, grid, align_corners=True, antialias=smooth))
      errors[label] = float(np.sqrt(np.mean((sampled - reference) ** 2)))
    errors["ratio"] = errors["plain"] / errors["antialias"]
    results[name] = errors
  results["zone_plate"] = size
  results["uniform_output"] = out
  return results


def contenders(batch, size, out, grid_size, stride, channels, seed=0):
  rng = np.random.default_rng(seed)
  image = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
  logits = jnp.asarray(rng.normal(size=(batch, grid_size, grid_size)), jnp.float32)
  saliency = sj.softmax_saliency(logits)
  grid = sj.attraction_grid(saliency, (out, out))
  coarse = sj.attraction_grid(saliency, (grid_size, grid_size))
  aligned = sj.attraction_grid(saliency, (grid_size, grid_size), axis_aligned=True)
  features = jnp.asarray(rng.normal(size=(batch, out // stride, out // stride, channels)),
                         jnp.float32)
  sample = jax.jit(lambda i, g: sj.grid_sample(i, g, align_corners=True))
  sample_aa = jax.jit(lambda i, g: sj.grid_sample(i, g, align_corners=True, antialias=True))
  sample_aa_xla = jax.jit(lambda i, g: antialias._xla_sample(i, g, True, "zeros"))
  invert = jax.jit(lambda g: sj.invert_grid(g, (out, out)))
  targets = jnp.broadcast_to(inverse.lattice(out), (batch, out))
  invert_xla = jax.jit(lambda g: inverse._invert_lattice_general(g, targets, targets))
  invert_aligned = jax.jit(lambda g: sj.invert_grid(g, (out, out), axis_aligned=True))
  unwarp = jax.jit(lambda f, g: sj.unwarp(f, g, (out // stride, out // stride),
                                          source_shape=(size, size)))
  block = jax.block_until_ready
  return {
      "grid_sample": lambda: block(sample(image, grid)),
      "grid_sample antialias": lambda: block(sample_aa(image, grid)),
      "grid_sample antialias, XLA formulation": lambda: block(sample_aa_xla(image, grid)),
      f"invert_grid {grid_size} -> {out}": lambda: block(invert(coarse)),
      f"invert_grid {grid_size} -> {out}, XLA formulation": lambda: block(invert_xla(coarse)),
      f"invert_grid {grid_size} -> {out} axis_aligned": lambda: block(invert_aligned(aligned)),
      f"unwarp stride {stride}": lambda: block(unwarp(features, grid)),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test only")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--output", default=None, help="JSON path (default per backend)")
  args = parser.parse_args()
  key = "quick" if args.quick else "paper"
  repeats = args.repeats or (2 if args.quick else 7)
  batch, size, out, grid_size, stride, channels = SIZES[key]
  fns = contenders(batch, size, out, grid_size, stride, channels)
  timings = common.interleaved_medians(fns, repeats=repeats,
                                       min_sample_s=0.0 if args.quick else 0.1)
  base = timings["grid_sample"]["median_ms"]
  rows = [(name, f"{t['median_ms']:.2f}", f"{t['median_ms'] / base:.2f}x")
          for name, t in timings.items()]
  common.print_table(f"{key}: batch {batch}, uint8 {size}x{size}x3 -> {out}x{out}, grid "
                     f"{grid_size}x{grid_size}, features stride {stride} x {channels}", rows,
                     ("op", "median ms", "vs grid_sample"))
  accuracy = antialias_errors(64, 8) if args.quick else antialias_errors(512, 64)
  rows = [(name, f"{accuracy[name]['plain']:.4f}", f"{accuracy[name]['antialias']:.4f}",
           f"{accuracy[name]['ratio']:.1f}x") for name in ("uniform", "peaked")]
  common.print_table(f"anti-aliasing on a {accuracy['zone_plate']}x{accuracy['zone_plate']} zone "
                     f"plate (RMS error against the supersampled footprints)", rows,
                     ("grid", "plain", "antialias", "error reduction"))
  results = {"environment": common.environment(), "native_kernels": native.available(),
             "sizes": dict(zip(
      ("batch", "image", "output", "grid", "stride", "channels"), SIZES[key])),
             "timings": timings, "antialias_errors": accuracy}
  output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                       f"unzoom_{jax.default_backend()}.json")
  files.write_json(output, results)
  print(f"\nwrote {output}")


if __name__ == "__main__":
  main()
