"""Timing helpers shared by the benchmarks: interleaved repetitions, medians, environment."""

import datetime
import os
import platform
import statistics
import time


def interleaved_medians(fns: dict, *, repeats: int, warmup: int = 2, pause_s: float = 0.05,
                        min_sample_s: float = 0.1) -> dict:
  """Times each callable `repeats` times, round-robin, after `warmup` calls each.

  Interleaving spreads any drift of the machine (other load, clocks) evenly over the contenders.
  Each sample calls its callable back to back enough times to last about `min_sample_s` (sized
  from the last warm-up call) and reports the mean per call, so that a millisecond-scale call is
  not dominated by the machine waking up after the pause that precedes every sample. Every
  callable must block until its work is done; `min_sample_s=0` times single calls. Returns
  {name: {"median_ms", "min_ms", "all_ms", "calls_per_sample"}}.
  """
  calls = {}
  for name, fn in fns.items():
    elapsed = 0.0
    for _ in range(max(warmup, 1 if min_sample_s > 0 else 0)):
      start = time.perf_counter()
      fn()
      elapsed = time.perf_counter() - start
    calls[name] = max(1, min(100, int(min_sample_s / max(elapsed, 1e-6))))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      # A pause between contenders: thread pools (PyTorch's OpenMP, XLA's) keep spinning for a
      # while after their work ends, and would otherwise slow whichever contender runs next.
      time.sleep(pause_s)
      start = time.perf_counter()
      for _ in range(calls[name]):
        fn()
      times[name].append((time.perf_counter() - start) * 1e3 / calls[name])
  return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "all_ms": t,
                 "calls_per_sample": calls[name]}
          for name, t in times.items()}


def environment() -> dict:
  """Versions and device, for the results file."""
  import jax
  info = {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
      "python": platform.python_version(),
      "machine": platform.machine(),
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
      "jax_backend": jax.default_backend(),
      "jax_device": str(jax.devices()[0].device_kind),
  }
  try:
    import torch
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
      info["torch_device"] = torch.cuda.get_device_name()
  except ImportError:
    pass
  return info


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
  widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
  print(f"\n{title}")
  line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
  print(line)
  print("-" * len(line))
  for r in rows:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def box_magnification(grid, boxes, source: int, *, align_corners: bool):
  """`[N]` each box's linear magnification by its warp against uniform sampling: the square root
  of the share of the grid's points `[N, h, w, 2]` ((x, y) in [-1, 1] over a `source`-pixel square
  image) inside its box `[N, 4]` (x0, y0, x1, y1, pixel edges) over the box's share of the image."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  grid = np.asarray(grid, np.float64)
  # align_corners=True puts -1 and 1 on the outer pixels' centres, False on their outer edges.
  points = ((grid + 1) / 2 * (source - 1) + 0.5 if align_corners else (grid + 1) / 2 * source)
  x0, y0, x1, y1 = (np.asarray(boxes, np.float64)[:, i, None, None] for i in range(4))
  inside = np.mean((points[..., 0] >= x0) & (points[..., 0] < x1)
                   & (points[..., 1] >= y0) & (points[..., 1] < y1), axis=(1, 2))
  return np.sqrt(inside / ((x1 - x0) * (y1 - y0))[:, 0, 0] * source**2)
