"""Plots the benchmark results under benchmarks/results/ into one PNG for the README.

    python benchmarks/plot.py            # writes benchmarks/results/benchmarks.png

One panel per results file found: the sampler benchmark (forward + backward of the layer, per
case, ms; from `sampler_<backend>.json`) and the train-step benchmark (images/s per model and
variant; from `train_step_<backend>.json`). Each panel's title names the backend, the date and the
software versions recorded in its file.
"""

import argparse
import glob
import json
import os

import matplotlib

matplotlib.use("Agg")  # No display: write files only.
from matplotlib import pyplot as plt  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _subtitle(environment: dict) -> str:
  device = environment.get("torch_device") or environment.get("jax_device", "?")
  return (f"{environment.get('jax_backend', '?')} ({device}), {environment.get('date', '?')}\n"
          f"jax {environment.get('jax', '?')}, torch {environment.get('torch', '?')}")


def _bars(axis, labels: list[str], values: list[float], unit: str) -> None:
  positions = range(len(labels))
  bars = axis.barh(list(positions), values, color="#4477aa")
  axis.set_yticks(list(positions), labels, fontsize=8)
  axis.invert_yaxis()
  axis.set_xlabel(unit)
  for bar, value in zip(bars, values):
    axis.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.1f}",
              va="center", fontsize=7)


def plot_sampler(axis, results: dict) -> None:
  labels, values = [], []
  for case, case_results in results["cases"].items():
    for name, timing in case_results["fwd+bwd"].items():
      labels.append(f"{case}: {name}")
      values.append(timing["median_ms"])
  _bars(axis, labels, values, "ms, forward + backward (lower is better)")
  axis.set_title("sampler layer, " + _subtitle(results["environment"]), fontsize=9)


def plot_train_step(axis, results: dict) -> None:
  labels = list(results["results"])
  values = [r["images_per_s"] for r in results["results"].values()]
  _bars(axis, labels, values, "images/s (higher is better)")
  settings = results["settings"]
  axis.set_title(f"train step, batch {settings['batch']}, {settings['image']} px -> "
                 f"{settings['task']} px, " + _subtitle(results["environment"]), fontsize=9)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--results", default=RESULTS, help="folder of the JSON results")
  parser.add_argument("--output", default=os.path.join(RESULTS, "benchmarks.png"))
  args = parser.parse_args()
  panels = []
  for path in sorted(glob.glob(os.path.join(args.results, "sampler_*.json"))):
    panels.append((plot_sampler, path))
  for path in sorted(glob.glob(os.path.join(args.results, "train_step_*.json"))):
    panels.append((plot_train_step, path))
  if not panels:
    raise SystemExit(f"no sampler_*.json or train_step_*.json in {args.results}; run the "
                     f"benchmarks first.")
  figure, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
  for axis, (plot, path) in zip(axes[:, 0], panels):
    with open(path) as f:
      plot(axis, json.load(f))
  figure.tight_layout()
  figure.savefig(args.output, dpi=110)
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
