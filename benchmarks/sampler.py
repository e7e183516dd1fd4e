"""Benchmark: saliency logits -> sampled image, JAX against the PyTorch port, same device.

Times the whole sampler layer (softmax, grid by Gaussian attraction, upsampling, bilinear
sampling of the high-resolution image) forward, and forward + backward with the gradient taken to
the saliency logits only (the image takes none, as in training) for a fixed random upstream
gradient of the sampled image, the same on both sides. Contenders, timed interleaved in
one run, medians over the repetitions:
- jax (uint8 image): `saliency_jax.saliency_sample` on the uint8 image, as the trainer feeds it;
- jax (float32 image): the same on a float32 image;
- jax pallas (uint8 image), jax pallas (float32 image): the same with
  `implementation="pallas"` (the Pallas/Triton sampling kernels), timed when --implementations
  names it (the default on GPU); "jax" alone is the XLA path, the default implementation;
- torch reference: the authors' algorithm literally (2-D 61x61 correlation), float32 image;
- torch tuned: separable correlation, float32 image (a fair, faster PyTorch baseline);
- optionally torch.compile of the tuned variant (--torch_compile).
Also times building the grid alone against sampling alone (the grid should cost next to nothing),
and the whole layer in the same set, so that the grid's cost inside the layer shows too.

Runs unchanged on CPU and on a GPU (torch uses CUDA when available, jax its default backend):
  python benchmarks/sampler.py                 # the paper's sizes and a larger case
  python benchmarks/sampler.py --cases=paper --repeats=5
  python benchmarks/sampler.py --implementations=xla,pallas   # on a GPU this is the default
  python benchmarks/sampler.py --cases=tiny --repeats=1       # smoke test of the code path only
Writes benchmarks/results/sampler_<backend>.json. Once a GPU has been measured, set the winner
for implementation="auto" in `saliency_jax/ops/sampling.py` (`_AUTO_IMPLEMENTATION`).
"""

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import saliency_jax as sj  # noqa: E402
from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402
from tests.references import torch_sampler  # noqa: E402

# (batch, high-resolution side, output side, grid side)
CASES = {
    "paper": (32, 800, 224, 31),
    "large": (16, 1600, 448, 61),
    # Not a measurement: exercises the whole code path in seconds (e.g. Pallas' interpret mode on
    # CPU).
    "tiny": (2, 64, 32, 7),
}
IMPLEMENTATIONS = ("xla", "pallas", "auto")


def default_implementations() -> str:
  # The Pallas kernels are written for the GPU's Triton backend; on CPU they only run in the
  # (very slow) interpret mode, and they do not lower for TPU.
  return "xla,pallas" if jax.default_backend() == "gpu" else "xla"


def _jax_name(implementation: str) -> str:
  """Contender prefix: "jax" for the default XLA path, as before the option existed."""
  return "jax" if implementation == "xla" else f"jax {implementation}"


def _forward_backward(layer, logits, image, cotangent):
  """The sampled image and the gradient to the logits for an upstream `cotangent`.

  As in training: the sampled image is materialised for the task network, whose gradient comes
  back as the cotangent. (A scalar loss such as `jnp.sum(sampled)` would instead let XLA:CPU fuse
  the whole interpolation into a single-threaded reduction, which no real model does.)
  """
  sampled, vjp = jax.vjp(lambda lg: layer(lg, image), logits)
  return sampled, vjp(cotangent)[0]


def jax_contenders(batch, size, out, grid_size, implementations=("xla",), seed=0):
  rng = np.random.default_rng(seed)
  image_u8 = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
  image_f32 = image_u8.astype(jnp.float32)
  logits = jnp.asarray(rng.normal(size=(batch, grid_size, grid_size)).astype(np.float32))
  cotangent = jnp.asarray(rng.normal(size=(batch, out, out, 3)).astype(np.float32))
  padding = grid_size - 1
  grid_only = jax.jit(lambda lg: sj.attraction_grid(
      sj.softmax_saliency(lg), (out, out), padding=padding))
  grid = grid_only(logits)

  block = jax.block_until_ready
  contenders = {"fwd": {}, "fwd+bwd": {}, "parts": {
      "jax grid (logits -> grid)": lambda: block(grid_only(logits)),
  }}
  for implementation in implementations:
    def layer(lg, image, implementation=implementation):
      sampled, _, _ = sj.saliency_sample(image, lg, (out, out), padding=padding,
                                         implementation=implementation)
      return sampled

    forward = jax.jit(layer)
    backward = jax.jit(functools.partial(_forward_backward, layer))
    sample_only = jax.jit(lambda im, g, implementation=implementation: sj.grid_sample(
        im, g, align_corners=True, implementation=implementation))
    name = _jax_name(implementation)
    # Default arguments bind this implementation's functions (the loop rebinds the names).
    contenders["fwd"].update({
        f"{name} (uint8 image)": lambda f=forward: block(f(logits, image_u8)),
        f"{name} (float32 image)": lambda f=forward: block(f(logits, image_f32)),
    })
    contenders["fwd+bwd"].update({
        f"{name} (uint8 image)": lambda f=backward: block(f(logits, image_u8, cotangent)),
        f"{name} (float32 image)": lambda f=backward: block(f(logits, image_f32, cotangent)),
    })
    contenders["parts"][f"{name} sampling (uint8 image, grid -> sampled)"] = (
        lambda f=sample_only: block(f(image_u8, grid)))
    # The whole forward once more, in the same interleaved set: what the layer pays for its
    # grid is the difference (inside the layer the grid feeds the sampler directly and is not
    # written out in its returned layout, unlike the grid-only program).
    contenders["parts"][f"{name} layer (uint8 image, logits -> sampled)"] = (
        lambda f=forward: block(f(logits, image_u8)))
  return contenders


def torch_contenders(batch, size, out, grid_size, *, compile_tuned, seed=0):
  device = "cuda" if torch.cuda.is_available() else "cpu"
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  rng = np.random.default_rng(seed)
  image = torch.tensor(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8),
                       device=device).float()
  logits = torch.tensor(rng.normal(size=(batch, 1, grid_size, grid_size)).astype(np.float32),
                        device=device)
  cotangent = torch.tensor(rng.normal(size=(batch, 3, out, out)).astype(np.float32),
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
    # The same upstream gradient as the JAX contenders get, channels first.
    def run():
      lg = logits.detach().requires_grad_()
      fn(image, lg).backward(cotangent)
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
  parser.add_argument("--implementations", default=None,
                      help=f"comma-separated grid_sample implementations of {IMPLEMENTATIONS} to "
                           f"time the JAX contenders with (default: xla on CPU and TPU, "
                           f"xla,pallas on GPU)")
  parser.add_argument("--output", default=None, help="JSON path (default per backend)")
  args = parser.parse_args()
  implementations = list(dict.fromkeys(
      (args.implementations or default_implementations()).split(",")))
  unknown = [i for i in implementations if i not in IMPLEMENTATIONS]
  if unknown:
    parser.error(f"--implementations must name some of {IMPLEMENTATIONS}; got {unknown}")

  env = common.environment()
  results = {"environment": env, "implementations": implementations, "cases": {}}
  for case in args.cases.split(","):
    batch, size, out, grid_size = CASES[case]
    jx = jax_contenders(batch, size, out, grid_size, implementations)
    tc = torch_contenders(batch, size, out, grid_size, compile_tuned=args.torch_compile)
    case_results = {"batch": batch, "image": size, "output": out, "grid": grid_size}
    # The parts first: timed after the heavy contenders, the same programs measured slower and
    # more variable (the large case's layer ~3 to 10 ms over its grid and sampling apart).
    parts = common.interleaved_medians(jx["parts"], repeats=args.repeats)
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
    case_results["parts"] = parts
    grid_ms = parts["jax grid (logits -> grid)"]["median_ms"]
    rows = [(name, f"{t['median_ms']:.2f}") for name, t in parts.items()]
    for implementation in implementations:
      name = _jax_name(implementation)
      sample_ms = parts[f"{name} sampling (uint8 image, grid -> sampled)"]["median_ms"]
      layer_ms = parts[f"{name} layer (uint8 image, logits -> sampled)"]["median_ms"]
      rows.append((f"grid / {name} sampling", f"{100 * grid_ms / sample_ms:.1f}%"))
      rows.append((f"({name} layer - sampling) / sampling, the grid inside the layer",
                   f"{100 * (layer_ms - sample_ms) / sample_ms:.1f}%"))
    common.print_table(f"{case}: grid construction against sampling (forward)", rows,
                       ("part", "ms"))
    results["cases"][case] = case_results

  output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                       f"sampler_{env['jax_backend']}.json")
  files.write_json(output, results)
  print(f"\nwrote {output}")


if __name__ == "__main__":
  main()
