r"""Diagnostic: how much the dense model's warp can magnify the dense scenes' objects, at best.

    python benchmarks/dense_oracle.py --examples=100

No training. The saliency is an *oracle*: the KDE of each evaluation image's true boxes
(`ops.kde_saliency`, the target of `dense_metrics.box_saliency_loss`), softmaxed on the dense
model's 31x31 map, optionally sharpened by a temperature, restricted to the small objects or with
each object's mass in inverse proportion to its area (`box_mass="inverse_area"`); the
grid is the model's (`ops.attraction_grid` at the task size, the 2-D attraction or its
axis-aligned form). Per object the linear magnification relative to uniform downsampling is
`sqrt(n / area) * source / task`: `n` the task input's pixels whose source point lies in the
object's box, `area` the box's area in source pixels (1 = uniform; 0 = the object fell between
the samples). Whatever the saliency network learns, the warp gives no more than this: a small
object whose pattern needs 2x to be read (`data.dense_scenes`) is out of reach where the oracle
gives less. Results are written to `--out` (JSON) and printed.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402
from saliency_jax import ops  # noqa: E402
from saliency_jax.data import dense_scenes  # noqa: E402

GRID = 31  # The dense model's saliency map (`model.grid_size`).


def magnifications(grid: np.ndarray, boxes: np.ndarray, keep: np.ndarray,
                   source: int) -> np.ndarray:
  """Per kept box, the grid's linear magnification over it relative to uniform (see above)."""
  images, objects = np.nonzero(keep)
  return common.box_magnification(grid[images], boxes[images, objects], source,
                                  align_corners=True)


def summary(values: np.ndarray) -> dict[str, float]:
  return {"median": float(np.median(values)), "p10": float(np.percentile(values, 10)),
          "p90": float(np.percentile(values, 90)), "at_least_2x": float(np.mean(values >= 2.0)),
          "none": float(np.mean(values == 0.0))}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=100)
  parser.add_argument("--task_size", type=int, default=128)
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                    "dense_oracle.json"))
  args = parser.parse_args()
  if args.examples < 1:
    raise SystemExit(f"--examples must be at least 1; got {args.examples}.")
  source = dense_scenes.DenseScenes(size=args.examples, split="eval")
  objects = [source.objects(i) for i in range(args.examples)]
  boxes = np.stack([o["boxes"] for o in objects])
  real = np.stack([o["labels"] for o in objects]) >= 0
  small = np.stack([o["small"] for o in objects])
  size = source.image_size
  normalised = ops.normalize_boxes(jnp.asarray(boxes), (size, size), align_corners=True)
  rows = []
  for axis_aligned in (True, False):
    for which, valid, box_mass in (("all objects", real, "equal"),
                                   ("all objects", real, "inverse_area"),
                                   ("small objects only", real & small, "equal")):
      logits = ops.kde_saliency(normalised, (GRID, GRID), valid=jnp.asarray(valid),
                                box_mass=box_mass)
      for temperature in (1.0, 0.5):
        saliency = jax.nn.softmax(logits.reshape(len(boxes), -1) / temperature, axis=-1)
        grid = np.asarray(ops.attraction_grid(saliency.reshape(logits.shape),
                                              (args.task_size, args.task_size),
                                              axis_aligned=axis_aligned))
        row = {"axis_aligned": axis_aligned, "kde_of": which, "box_mass": box_mass,
               "temperature": temperature,
               "small": summary(magnifications(grid, boxes, real & small, size)),
               "large": summary(magnifications(grid, boxes, real & ~small, size))}
        rows.append(row)
        s, l = row["small"], row["large"]
        print(f"axis_aligned={axis_aligned!s:5} KDE of {which:18} {box_mass:12} "
              f"T={temperature}: small "
              f"median {s['median']:.2f}x (p10 {s['p10']:.2f}, p90 {s['p90']:.2f}, >= 2x "
              f"{s['at_least_2x']:.0%}, none {s['none']:.0%}); large median {l['median']:.2f}x",
              flush=True)
  files.write_json(args.out, {"examples": args.examples, "image_size": size,
                              "task_size": args.task_size, "grid_size": GRID, "rows": rows})


if __name__ == "__main__":
  main()
