"""Benchmark: the training step of the demo's recipes, side by side.

Times, interleaved in one run (medians, `common.interleaved_medians`), one jitted training step
(forward, backward, update; `saliency_jax.train.build_experiment`) of `configs/default.py` (the
demo: batch 32 of 256 px images, task network at 64 px) for each recipe the README's demo table
compares, and reports it as training throughput (images per second):
- uniform: the uniform baseline (`model.name=uniform`);
- plain: the sampler as the authors made it (`default.common_config()`, bilinear sampling);
- antialias: with anti-aliased sampling (`model.antialias=True`);
- uniform view: antialias, the task network also reading the uniform view, each view on its own
  loss, gradients clipped per parameter group (`model.uniform_view=each`,
  `optimizer.clip_per_group=True`): the task network runs twice per image;
- recipe: the project's recipe (`default.with_sampler_recipe`): the uniform view with the exact
  identity (`model.exact_identity=True`, `model.align_corners=False`) and the task network's
  evidence as the map's only teacher (`model.saliency_supervision=1.0`,
  `model.warp_gradient=False`): one more forward and backward of the task network, none
  through the warp;
- demo: `configs/default.py` itself, the recipe with the magnification capped at the source's
  resolution (`model.cap_at_source=True`);
- no evidence: the demo without the evidence (`model.saliency_supervision=0.0`,
  `model.warp_gradient=True`; the demo until 2026-12-07);
- evidence through the warp: the demo with the task loss's gradient through the warp as well
  (`model.warp_gradient=True`).
Every contender sees the same batch; the blur warm-up is off, as in the demo.

  python benchmarks/recipe_step.py            # the demo's sizes, 7 repetitions
  python benchmarks/recipe_step.py --quick    # tiny sizes, 2 repetitions: a smoke test only
  python benchmarks/recipe_step.py --recipes=recipe,demo
Writes benchmarks/results/recipe_step_<backend>.json (with the environment).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks import common  # noqa: E402
from configs import default  # noqa: E402
from saliency_jax import data  # noqa: E402
from saliency_jax import files  # noqa: E402
from saliency_jax import train  # noqa: E402

# name -> the recipe: the configs/default.py function that builds its base (None:
# `default.common_config()`, the paper's layer), and the fields it sets on top.
RECIPES = {
    "uniform": (None, {"model.name": "uniform"}),
    "plain": (None, {}),
    "antialias": (None, {"model.antialias": True}),
    "uniform view": (None, {"model.antialias": True, "model.uniform_view": "each",
                            "optimizer.clip_per_group": True}),
    "recipe": ("with_sampler_recipe", {}),
    "demo": ("get_config", {}),
    "no evidence": ("get_config", {"model.saliency_supervision": 0.0,
                                   "model.warp_gradient": True}),
    "evidence through the warp": ("get_config", {"model.warp_gradient": True}),
}


def _config(quick: bool, recipe):
  base, fields = recipe
  if base == "get_config":
    config = default.get_config()
  elif base == "with_sampler_recipe":
    config = default.with_sampler_recipe(default.common_config())
  else:
    config = default.common_config()
  for name, value in fields.items():
    section, field = name.split(".")
    config[section][field] = value
  if quick:
    config.data.image_size = 64
    config.data.synthetic.update(object_size=16, frame_width=2, detail_period=4)
    config.model.update(task_size=32, low_res_size=32)
    config.batch_size = 8  # Divisible by the tests' 8 host devices.
  config.compare_with_uniform = False  # One model per contender.
  train.validate_config(config)
  return config


def _step(config, batch):
  """A callable running one training step (blocking), its state carried from call to call."""
  experiment = train.build_experiment(
      config, mesh=train.make_mesh(), num_outputs=config.data.synthetic.num_classes,
      task="classification", total_steps=config.num_train_steps, steps_per_epoch=100.0,
      blur_steps=0)
  state = {"state": experiment.initial_state}

  def run():
    state["state"], metrics = experiment.train_step(state["state"], batch, False)
    jax.block_until_ready(metrics["loss"])

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=0)
  parser.add_argument("--recipes", default=",".join(RECIPES),
                      help=f"comma-separated, of {list(RECIPES)}")
  parser.add_argument("--output", default=None,
                      help="the JSON to write (default: results/recipe_step_<backend>.json)")
  args = parser.parse_args()
  repeats = args.repeats or (2 if args.quick else 7)
  names = args.recipes.split(",")
  if unknown := [name for name in names if name not in RECIPES]:
    parser.error(f"--recipes: expected names of {list(RECIPES)}; got {unknown}.")
  configs = {name: _config(args.quick, RECIPES[name]) for name in names}
  first = next(iter(configs.values()))
  loader = data.make_loader(first.data, split="train", global_batch_size=first.batch_size,
                            mesh=train.make_mesh(), seed=0)
  batch = next(iter(loader))
  loader.close()
  steps = {name: _step(config, batch) for name, config in configs.items()}
  times = common.interleaved_medians(steps, repeats=repeats, warmup=2, min_sample_s=0)
  batch_size = first.batch_size
  rows = [(name, f"{t['median_ms']:.0f}", f"{t['min_ms']:.0f}",
           f"{batch_size / t['median_ms'] * 1e3:.0f}") for name, t in times.items()]
  common.print_table(
      f"Training step of the demo's recipes, batch {batch_size}, {first.data.image_size} -> "
      f"{first.model.task_size} (medians of {repeats})", rows,
      ("recipe", "median ms", "min ms", "images/s"))
  recipes = {name: {"base": f"configs/default.py:{RECIPES[name][0] or 'common_config'}",
                   "fields": RECIPES[name][1]} for name in names}
  payload = {"environment": common.environment(), "quick": args.quick, "repeats": repeats,
             "batch_size": batch_size, "image_size": first.data.image_size,
             "task_size": first.model.task_size, "recipes": recipes, "times": times}
  name = "recipe_step_quick" if args.quick else "recipe_step"
  default_output = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                f"{name}_{jax.default_backend()}.json")
  files.write_json(args.output or default_output, payload)


if __name__ == "__main__":
  main()
