"""Fused CPU kernels (XLA FFI, `native.cc`): anti-aliased sampling, the lattice inverse, and the
scatter-add of sampling's gradient to an image.

On XLA:CPU these ops are bound by their gathers and scatters (one loop per tap, several taps per
output pixel; see benchmarks/README.md); `native.cc` computes them in one pass per output pixel
instead. They are used only where they hold: on the CPU platform
(`jax.lax.platform_dependent` picks the XLA formulation elsewhere), for values that are not
differentiated again (the forward values of anti-aliasing and of the inverse, whose gradients are
JAX's, as `antialias.py` and `inverse.py` say, and the image gradient inside `grid_sample`'s
custom VJP), and when the kernels could be built. The source is compiled on first use with the machine's C++ compiler (`$CXX`, else `c++`)
against the installed jaxlib's FFI headers, into `$SALIENCY_JAX_CACHE` (default
`~/.cache/saliency_jax`), keyed by the source and the headers; `python -m saliency_jax.ops.native`
builds it ahead of time. Without a compiler, or with `SALIENCY_JAX_NATIVE=0`, the XLA formulation
runs everywhere, with the same numbers (float32 rounding) and a one-time warning when a build fails.
"""

import ctypes
import fcntl
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = pathlib.Path(__file__).with_name("native.cc")
_TARGETS = {"antialias_uint8": "SaliencyAntialiasU8", "antialias_float32": "SaliencyAntialiasF32",
            "invert": "SaliencyInvert", "scatter": "SaliencyScatter"}
PADDING_CODES = {"zeros": 0, "border": 1, "reflection": 2}
# -fno-math-errno and -fno-trapping-math let the compiler vectorise square roots and guarded
# divisions; IEEE results (NaN included) are unchanged (no -ffast-math).
_FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c++17", "-shared", "-fPIC")


def _compiler() -> str | None:
  return shutil.which(os.environ.get("CXX", "c++"))


def _headers() -> pathlib.Path | None:
  try:
    include = pathlib.Path(jax.ffi.include_dir())
  except AttributeError:  # jax without jax.ffi.
    return None
  header = include / "xla" / "ffi" / "api" / "ffi.h"
  # The kernels spread their work over XLA's thread pool, which older FFI headers lack.
  if not header.is_file() or "class ThreadPool" not in header.read_text():
    return None
  return include


def library_path(include: pathlib.Path) -> pathlib.Path:
  """Where the kernels built from this source against these headers are cached."""
  digest = hashlib.sha256(_SOURCE.read_bytes() + repr(_FLAGS).encode())
  for name in ("ffi.h", "api.h", "c_api.h"):
    digest.update((include / "xla" / "ffi" / "api" / name).read_bytes())
  cache = pathlib.Path(os.environ.get("SALIENCY_JAX_CACHE",
                                      pathlib.Path.home() / ".cache" / "saliency_jax"))
  return cache / f"native-{digest.hexdigest()[:16]}.so"


def build(include: pathlib.Path) -> pathlib.Path:
  """Compiles `native.cc` into the cache (once per source and headers; safe across processes)."""
  path = library_path(include)
  if path.exists():
    return path
  compiler = _compiler()
  if compiler is None:
    raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on the PATH")
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path.with_suffix(".lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Parallel test workers build it once.
    if path.exists():
      return path
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
      built = pathlib.Path(scratch) / path.name
      command = [compiler, *_FLAGS, "-isystem", str(include), str(_SOURCE), "-o", str(built)]
      result = subprocess.run(command, capture_output=True, text=True)
      if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
      os.replace(built, path)
  return path


_LOCK = threading.Lock()


def available() -> bool:
  """Whether the kernels are built and registered (the first call builds them)."""
  with _LOCK:  # Tracing threads (input pipelines, evaluation) must not register twice.
    return _load()


@functools.cache
def _load() -> bool:
  if os.environ.get("SALIENCY_JAX_NATIVE", "1") == "0":
    return False
  include = _headers()
  if include is None or (_compiler() is None and not library_path(include).exists()):
    return False  # No way to the kernels: the XLA formulation, silently (nothing failed).
  try:
    library = ctypes.cdll.LoadLibrary(str(build(include)))
    for name, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(f"saliency_jax_{name}", jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform="cpu")
  except (OSError, RuntimeError, AttributeError) as error:
    warnings.warn(f"saliency_jax's CPU kernels could not be built; the XLA formulation runs "
                  f"instead (same numbers, slower): {error}", RuntimeWarning, stacklevel=2)
    return False
  return True


def dispatch(cpu, default, *operands):
  """`cpu(*operands)` where the computation runs on the CPU and the kernels are built, else
  `default(*operands)` (the XLA formulation, with the same outputs)."""
  if not available():
    return default(*operands)
  return jax.lax.platform_dependent(*operands, cpu=cpu, default=default)


def _require():
  if not available():
    raise RuntimeError("saliency_jax's CPU kernels are not available: check native.available() "
                       "first.")


def antialiased_sample(image: jax.Array, grid: jax.Array, align_corners: bool,
                       padding_mode: str) -> jax.Array:
  """`antialias.antialiased_sample`'s forward value: `[..., h, w, C]` float32 (CPU only)."""
  _require()
  name = "antialias_uint8" if image.dtype == jnp.uint8 else "antialias_float32"
  shape = grid.shape[:-1] + image.shape[-1:]
  call = jax.ffi.ffi_call(f"saliency_jax_{name}", jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method="broadcast_all")
  return call(image, grid.astype(jnp.float32), align_corners=bool(align_corners),
              padding_mode=np.int32(PADDING_CODES[padding_mode]))


def invert_lattice(grid: jax.Array, xs: jax.Array, ys: jax.Array, *,
                   fill: float = float("nan")):
  """`inverse.invert_lattice`: the inverse `[..., H, W, 2]` float32 and `covered` bool (CPU only).

  `grid [..., h, w, 2]`, the targets `xs [..., W]`, `ys [..., H]` (leading axes alike); uncovered
  targets get `fill` unless it is NaN (then the extrapolation).
  """
  _require()
  shape = grid.shape[:-3] + (ys.shape[-1], xs.shape[-1])
  call = jax.ffi.ffi_call("saliency_jax_invert",
                          (jax.ShapeDtypeStruct(shape + (2,), jnp.float32),
                           jax.ShapeDtypeStruct(shape, jnp.uint8)),
                          vmap_method="broadcast_all")
  inverse, covered = call(grid.astype(jnp.float32), xs.astype(jnp.float32),
                          ys.astype(jnp.float32), fill=np.float32(fill))
  return inverse, covered != 0


def scatter_to_image(shape, row, col, wy, wx, g):
  """`taps.scatter_to_image` for a float32 image of `shape` `[..., H, W, C]` (CPU only).

  `row, col [..., h, w]` int32 patch starts, `wy, wx` tuples of 1 or 2 weights `[..., h, w]`,
  `g [..., h, w, C]`: the float32 gradient to the image.
  """
  _require()
  zero = jnp.zeros_like(wy[0])
  pad = lambda weights: (weights[0], weights[1] if len(weights) > 1 else zero)
  call = jax.ffi.ffi_call("saliency_jax_scatter", jax.ShapeDtypeStruct(shape, jnp.float32),
                          vmap_method="broadcast_all")
  return call(row.astype(jnp.int32), col.astype(jnp.int32), *pad(wy), *pad(wx),
              g.astype(jnp.float32), rows=np.int64(len(wy)), cols=np.int64(len(wx)))


if __name__ == "__main__":
  if not available():
    sys.exit("saliency_jax's CPU kernels are not available (no C++ compiler, FFI headers "
             "without a thread pool, or SALIENCY_JAX_NATIVE=0).")
  print(library_path(_headers()))
