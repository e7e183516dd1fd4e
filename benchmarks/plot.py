"""Plots the benchmark results under benchmarks/results/ into one PNG for the README.

    python benchmarks/plot.py            # writes benchmarks/results/benchmarks.png

One panel per results file found: the sampler benchmark (forward + backward of the layer, per
case, ms; from `sampler_<backend>.json`) and the train-step benchmark (images/s per model and
variant; from `train_step_<backend>.json`). Each panel's title names the backend, the date and the
software versions recorded in its file. The zoom suite's results (`zoom_suite_cpu.json`), if
present, go to their own `zoom_suite.png` beside it: top-1 per recipe, family, size and model.
"""

import argparse
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # No display: write files only.
from matplotlib import pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from saliency_jax.data import zoom_tasks  # noqa: E402

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


def plot_zoom_suite(axis, results: dict) -> None:
  """Top-1 of every recipe (tag), family, task size and model: mean over seeds, +- std."""
  labels, means, stds, marks = [], [], [], []
  for tag, entry in results["tags"].items():
    for family, by_size in entry["runs"].items():
      for size, by_model in sorted(by_size.items(), key=lambda kv: -int(kv[0])):
        for model, records in by_model.items():
          top1 = [100 * r["top1"] for r in records]
          steps = records[0]["steps"]
          labels.append(f"{tag}: {family} {size}, {model}, {steps} steps, {len(top1)} seed(s)")
          means.append(statistics.fmean(top1))
          stds.append(statistics.stdev(top1) if len(top1) > 1 else 0.0)
          marks.append(100 / zoom_tasks.NUM_CLASSES[family])
  positions = list(range(len(labels)))
  axis.barh(positions, means, xerr=stds, color="#4477aa", error_kw={"linewidth": 0.8})
  axis.scatter(marks, positions, marker="|", color="black", s=40, zorder=3, label="chance")
  axis.set_yticks(positions, labels, fontsize=6)
  axis.invert_yaxis()
  axis.set_xlim(0, 100)
  axis.set_xlabel("top-1 % on held-out images, mean +- std over seeds (higher is better)")
  axis.legend(fontsize=7, loc="lower right")
  axis.set_title("zoom suite, " + _subtitle(results["environment"]), fontsize=9)


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
  suite = os.path.join(args.results, "zoom_suite_cpu.json")
  if os.path.exists(suite):
    with open(suite) as f:
      results = json.load(f)
    bars = sum(len(by_model) for entry in results["tags"].values()
               for by_size in entry["runs"].values() for by_model in by_size.values())
    figure, axis = plt.subplots(figsize=(9, 1.0 + 0.16 * bars))
    plot_zoom_suite(axis, results)
    figure.tight_layout()
    output = os.path.join(os.path.dirname(args.output), "zoom_suite.png")
    figure.savefig(output, dpi=110, bbox_inches="tight")  # The labels are long.
    print(f"wrote {output}")


if __name__ == "__main__":
  main()
