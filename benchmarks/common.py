"""Timing helpers shared by the benchmarks: interleaved repetitions, medians, environment."""

import datetime
import json
import os
import platform
import statistics
import time


def interleaved_medians(fns: dict, *, repeats: int, warmup: int = 2) -> dict:
  """Times each callable `repeats` times, round-robin, after `warmup` calls each.

  Interleaving spreads any drift of the machine (other load, clocks) evenly over the contenders.
  Every callable must block until its work is done. Returns {name: {"median_ms", "min_ms",
  "all_ms"}}.
  """
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append((time.perf_counter() - start) * 1e3)
  return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "all_ms": t}
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


def write_json(path: str, payload: dict) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def print_table(title: str, rows: list[tuple], header: tuple) -> None:
  widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
  print(f"\n{title}")
  line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
  print(line)
  print("-" * len(line))
  for r in rows:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
