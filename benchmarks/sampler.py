"""Benchmark: saliency logits -> sampled image, JAX against the PyTorch port, same device.

Times the whole sampler layer (softmax, grid by Gaussian attraction, upsampling, bilinear
sampling of the high-resolution image) forward, and forward + backward with the gradient taken to
the saliency logits only (the image takes none, as in training). Contenders, timed interleaved in
one run, medians over the repetitions:
- jax (uint8 image): `saliency_jax.saliency_sample` on the uint8 image, as the trainer feeds it;
- jax (float32 image): the same on a float32 image;
- torch reference: the authors' algorithm literally (2-D 61x61 correlation), float32 image;
- torch tuned: separable correlation, float32 image (a fair, faster PyTorch baseline);
- optionally torch.compile of the tuned variant (--torch_compile).
Also times building the grid alone against sampling alone (the grid should cost next to nothing).

Runs unchanged on CPU and on a GPU (torch uses CUDA when available, jax its default backend):
  python benchmarks/sampler.py                 # the paper's sizes and a larger case
  python benchmarks/sampler.py --cases=paper --repeats=5
Writes benchmarks/results/sampler_<backend>.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import saliency_jax as sj  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks import torch_sampler  # noqa: E402

# (batch, high-resolution side, output side, grid side)
CASES = {
    "paper": (32, 800, 224, 31),
    "large": (16, 1600, 448, 61),
}


def jax_contenders(batch, size, out, grid_size, seed=0):
  rng = np.random.default_rng(seed)
  image_u8 = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
  image_f32 = image_u8.astype(jnp.float32)
  logits = jnp.asarray(rng.normal(size=(batch, grid_size, grid_size)).astype(np.float32))
  padding = grid_size - 1

  def layer(lg, image):
    sampled, _, _ = sj.saliency_sample(image, lg, (out, out), padding=padding)
    return sampled

  forward = jax.jit(layer)
  # The loss is a plain sum so that the backward pass is the layer's own.
  backward = jax.jit(jax.value_and_grad(lambda lg, im: jnp.sum(layer(lg, im))))
  grid_only = jax.jit(lambda lg: sj.attraction_grid(
      sj.softmax_saliency(lg), (out, out), padding=padding))
  grid = grid_only(logits)
  sample_only = jax.jit(lambda im, g: sj.grid_sample(im, g, align_corners=True))

  block = jax.block_until_ready
  return {
      "fwd": {
          "jax (uint8 image)": lambda: block(forward(logits, image_u8)),
          "jax (float32 image)": lambda: block(forward(logits, image_f32)),
      },
      "fwd+bwd": {
          "jax (uint8 image)": lambda: block(backward(logits, image_u8)),
          "jax (float32 image)": lambda: block(backward(logits, image_f32)),
      },
      "parts": {
          "jax grid (logits -> grid)": lambda: block(grid_only(logits)),
          "jax sampling (uint8 image, grid -> sampled)": lambda: block(sample_only(image_u8, grid)),
      },
  }


def torch_contenders(batch, size, out, grid_size, *, compile_tuned, seed=0):
  device = "cuda" if torch.cuda.is_available() else "cpu"
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  rng = np.random.default_rng(seed)
  image = torch.tensor(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8),
                       device=device).float()
  logits = torch.tensor(rng.normal(size=(batch, 1, grid_size, grid_size)).astype(np.float32),
                        device=device)
  padding = grid_size - 1
  tuned = torch_sampler.TunedSampler((grid_size, grid_size), (out, out), padding=padding,
                                     device=device)
  variants = {
      "torch reference": lambda im, lg: torch_sampler.reference_saliency_sample(
          im, lg, (out, out), padding=padding)[0],
      "torch tuned": lambda im, lg: tuned(im, lg)[0],
  }
  if compile_tuned:
    variants["torch tuned + compile"] = torch.compile(variants["torch tuned"])

  def forward(fn):
    def run():
      with torch.no_grad():
        fn(image, logits)
      sync()
    return run

  def backward(fn):
    def run():
      lg = logits.detach().requires_grad_()
      fn(image, lg).sum().backward()
      sync()
    return run

  return {
      "fwd": {name: forward(fn) for name, fn in variants.items()},
      "fwd+bwd": {name: backward(fn) for name, fn in variants.items()},
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cases", default="paper,large", help=f"comma-separated of {list(CASES)}")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--torch_compile", action="store_true")
  parser.add_argument("--output", default=None, help="JSON path (default per backend)")
  args = parser.parse_args()

  env = common.environment()
  results = {"environment": env, "cases": {}}
  for case in args.cases.split(","):
    batch, size, out, grid_size = CASES[case]
    jx = jax_contenders(batch, size, out, grid_size)
    tc = torch_contenders(batch, size, out, grid_size, compile_tuned=args.torch_compile)
    case_results = {"batch": batch, "image": size, "output": out, "grid": grid_size}
    for mode in ("fwd", "fwd+bwd"):
      timings = common.interleaved_medians({**jx[mode], **tc[mode]}, repeats=args.repeats)
      base = timings["torch reference"]["median_ms"]
      case_results[mode] = timings
      common.print_table(
          f"{case}: batch {batch}, {size}x{size} -> {out}x{out}, grid {grid_size}x{grid_size}, "
          f"{mode}, median of {args.repeats} ({env['jax_backend']})",
          [(name, f"{t['median_ms']:.1f}", f"{base / t['median_ms']:.2f}x")
           for name, t in timings.items()],
          ("contender", "ms", "speed-up vs torch reference"))
    parts = common.interleaved_medians(jx["parts"], repeats=args.repeats)
    case_results["parts"] = parts
    grid_ms, sample_ms = (t["median_ms"] for t in parts.values())
    common.print_table(
        f"{case}: grid construction against sampling (forward)",
        [(name, f"{t['median_ms']:.2f}") for name, t in parts.items()]
        + [("grid / sampling", f"{100 * grid_ms / sample_ms:.1f}%")],
        ("part", "ms"))
    results["cases"][case] = case_results

  output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                       f"sampler_{env['jax_backend']}.json")
  common.write_json(output, results)
  print(f"\nwrote {output}")


if __name__ == "__main__":
  main()
