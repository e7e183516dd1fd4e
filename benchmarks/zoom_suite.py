r"""Measurement: the sampler against uniform downsampling and baselines on the zoom-task suite.

    python benchmarks/zoom_suite.py --quick       # smoke test: every family, tiny runs (~2 min)
    python benchmarks/zoom_suite.py               # every family x size x model x seed
    python benchmarks/zoom_suite.py --families=zoom_count --sizes=64 --models=saliency_sampler,uniform
    python benchmarks/zoom_suite.py --tag=torch_head --set=model.saliency_head_init=torch

Every run is `configs/zoom_suite.py` with `data.name` (the family), `model.task_size`,
`model.name` and `seed` changed, and `--set` overrides applied to all runs (an ablation is a
`--tag` with its `--set`s). `--sampler_recipe` gives the sampler's runs the demo's recipe
(`configs/default.py`, `with_sampler_recipe`; the other models keep theirs), e.g.
    python benchmarks/zoom_suite.py --tag=recipe --sampler_recipe --models=saliency_sampler,uniform
The same steps, data and optimizer for every contender. Each run
trains in its own workdir under `--workdir`; a run whose results are already in the output JSON
is not trained again, so an interrupted suite resumes where it stopped.

The JSON (`benchmarks/results/zoom_suite_<backend>.json` unless `--out`) holds, per tag, family,
task size and model, one record per seed: evaluation top-1, the run's loss curve, its
*collapse*: the largest rise of the training loss above its running minimum, in % of the
minimum (the suite's no-collapse target is below 50 %), and for the sampler its *look*
(`look`): whether the trained map zooms on the target tile, whatever the task network reads.
`--look` adds the look to the records of finished runs that lack it (their workdirs kept). A tag
records its overrides and, with `--sampler_recipe`, the recipe's fields (`models.SAMPLER_RECIPE`
and, since 2026-12-08, `default.RECIPE_OPTIMIZER` as "optimizer.FIELD", as they were; `true` in
tags recorded before 2026-12-07 afternoon: the recipe of then, without the evidence and the
cut; tags of 2026-12-07 hold the model fields alone, with the optimizer's clipping per group
and no hold); runs that would differ from a tag's are
refused, so that one tag never mixes two recipes. The
summary prints mean +- std over seeds, the target's magnification, and checks the suite's targets
against uniform downsampling at the same size.
"""

import argparse
import ast
import contextlib
import fcntl
import importlib.util
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402

FAMILIES = ("zoom_glyph", "zoom_orientation", "zoom_count", "zoom_marker")
SIZES = (256, 128, 64)
MODELS = ("saliency_sampler", "uniform", "cam_crop", "stn_affine")
# STN affine's localisation network needs the smaller rates (see configs/stn_affine.py).
_MODEL_OVERRIDES = {"stn_affine": {"optimizer.lr_multipliers.saliency_head": 0.01,
                                   "optimizer.lr_multipliers.saliency_backbone": 0.01}}


def suite_config(family: str, size: int, model: str, seed: int, overrides: dict, *,
                 sampler_recipe: bool = False):
  """`configs/zoom_suite.py` for one run; with `sampler_recipe`, the sampler's runs take the
  demo's recipe (`configs/default.py`'s `with_sampler_recipe`) before the overrides."""
  spec = importlib.util.spec_from_file_location("zoom_suite_config",
                                                os.path.join(ROOT, "configs", "zoom_suite.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.name = family
  config.model.task_size = size
  config.model.name = model
  config.seed = seed
  config.compare_with_uniform = False
  if sampler_recipe and model == "saliency_sampler":
    from configs import default  # pylint: disable=g-import-not-at-top
    default.with_sampler_recipe(config)
  for key, value in {**_MODEL_OVERRIDES.get(model, {}), **overrides}.items():
    parent, _, field = key.rpartition(".")
    node = config
    try:
      for part in filter(None, parent.split(".")):
        node = node[part]
      if field not in node:
        raise KeyError(field)
      node[field] = value  # The locked ConfigDict rejects wrong types.
    except (KeyError, TypeError) as error:
      problem = ("is not a config field" if isinstance(error, KeyError)
                 else f"cannot take {value!r}: {error}")
      raise SystemExit(f"--set: {key} {problem}.") from None
  return config


def collapse(curve: list) -> float:
  """Largest rise of the loss above its running minimum, in % of that minimum."""
  worst, low = 0.0, float("inf")
  for _, loss in curve:
    low = min(low, loss)
    worst = max(worst, (loss - low) / low * 100 if low > 0 else 0.0)
  return worst


def parse_overrides(items: list[str]) -> dict:
  overrides = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise SystemExit(f"--set: expected FIELD=VALUE (e.g. model.saliency_head_init=zero); "
                       f"got {item!r}.")
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text  # A bare word: a string field.
  return overrides


def look(config, workdir: str, *, num_images: int = 64) -> dict:
  """The trained sampler's zoom on the target: restores the run's newest checkpoint and warps
  `num_images` evaluation images. "target_magnification": the median over the images of the
  target tile's linear magnification against uniform downsampling (the square root of the share
  of the task input's pixels whose source point lies in the tile's frame, over the frame's share
  of the image; 1 for a uniform map); "map_information": the mean KL divergence of the map from
  the uniform one, in nats (`ops.saliency_information`)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from saliency_jax import ops, train  # pylint: disable=g-import-not-at-top
  from saliency_jax.data import zoom_tasks  # pylint: disable=g-import-not-at-top
  num_classes = zoom_tasks.NUM_CLASSES[config.data.name]
  experiment = train.build_experiment(
      config, mesh=train.make_mesh(), num_outputs=num_classes, task="classification",
      total_steps=config.num_train_steps, steps_per_epoch=1.0, blur_steps=0,
      load_pretrained=False)
  checkpoints = train.Checkpointer(os.path.join(workdir, "checkpoints"), every_steps=1, keep=1)
  restored = checkpoints.restore_newest(experiment.abstract_state(), move_broken=False)
  checkpoints.close()
  if restored is None:
    raise SystemExit(f"--look: no checkpoint in {workdir}.")
  model = train.create_model(config, num_outputs=num_classes, load_pretrained=False)
  model.eval()
  model = nnx.merge(nnx.split(model, nnx.Param, ...)[0], restored.state.params,
                    restored.state.model_state)
  from saliency_jax import data  # pylint: disable=g-import-not-at-top
  from saliency_jax.data import config as data_config  # pylint: disable=g-import-not-at-top
  source = data.make_source(data_config.parse_data_config(config.data), "eval")
  examples = [source[i] for i in range(num_images)]  # The run's own evaluation images.
  images = jnp.asarray(np.stack([e["image"] for e in examples]))
  _, extras = model(images)
  top_left_bottom_right = np.stack([e["box"] for e in examples])
  magnifications = common.box_magnification(
      extras["grid"], top_left_bottom_right[:, [1, 0, 3, 2]], images.shape[1],
      align_corners=False)
  information = ops.saliency_information(extras["saliency"])
  return {"target_magnification": float(np.median(magnifications)),
          "map_information": float(np.mean(information)), "images": num_images}


def _stats(values: list[float]) -> tuple[float, float]:
  return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: dict, chance: dict) -> list[tuple]:
  """Rows (family, size, model, n, top-1 mean +- std, vs uniform, collapse max, the target's
  mean magnification where measured, target)."""
  rows = []
  for family, by_size in runs.items():
    for size, by_model in sorted(by_size.items(), key=lambda kv: -int(kv[0])):
      base = [r["top1"] for r in by_model.get("uniform", [])]
      base_mean = _stats(base)[0] * 100 if base else None
      for model, records in by_model.items():
        mean, std = (100 * v for v in _stats([r["top1"] for r in records]))
        worst = max(r["collapse"] for r in records)
        delta, verdict = "", ""
        if base_mean is not None and model != "uniform":
          delta = f"{mean - base_mean:+.1f}"
          verdict = _target(mean, base_mean, 100 * chance[family])
        looks = [r["look"]["target_magnification"] for r in records if "look" in r]
        zoom = f"{statistics.fmean(looks):.2f}x" if looks else ""
        rows.append((family, size, model, len(records), f"{mean:.1f} +- {std:.1f}", delta,
                     f"{worst:.0f} %", zoom, verdict))
  return rows


def _target(mean: float, uniform: float, chance: float) -> str:
  """The suite's targets for a contender against uniform at the same size (see issue 15)."""
  verdicts = ["never hurts: " + ("ok" if mean >= uniform - 1 else "MISSED")]
  if chance + 10 <= uniform <= 90:
    verdicts.append("helps: " + ("ok" if mean >= uniform + 15 else "MISSED"))
  elif uniform < chance + 10:
    verdicts.append("looks: " + ("ok" if mean >= 2 * chance else "MISSED"))
  return ", ".join(verdicts)


def _load(path: str) -> dict:
  payload = {"tags": {}}
  if os.path.exists(path):
    with open(path) as f:
      payload = json.load(f)
  return payload


def _recipe(sampler_recipe: bool) -> dict | None:
  """What a tag records of the sampler's recipe: its model fields and its optimizer's (named
  "optimizer.FIELD") now, or None without it."""
  if not sampler_recipe:
    return None
  from configs import default  # pylint: disable=g-import-not-at-top
  from saliency_jax import models  # pylint: disable=g-import-not-at-top
  return {**models.SAMPLER_RECIPE,
          **{f"optimizer.{k}": v for k, v in default.RECIPE_OPTIMIZER.items()}}


def _check_tag(payload: dict, tag: str, overrides: dict, recipe: dict | None) -> None:
  """Refuses runs whose overrides or recipe differ from those `tag` holds runs of."""
  entry = payload["tags"].get(tag)
  if not entry or not entry.get("runs"):
    return
  asked = json.loads(json.dumps({"overrides": overrides, "sampler_recipe": recipe}))
  held = {"overrides": entry.get("overrides", {}), "sampler_recipe": entry.get("sampler_recipe")}
  if asked != held:
    raise SystemExit(f"--tag {tag!r}: its runs were made with {held}; these would be made with "
                     f"{asked}: choose another --tag or --out.")


def _runs(payload: dict, tag: str, family: str, size: int, model: str) -> list:
  """The records of one (tag, family, size, model), created empty if missing."""
  entry = payload["tags"].setdefault(tag, {"overrides": {}, "runs": {}})
  return entry["runs"].setdefault(family, {}).setdefault(str(size), {}).setdefault(model, [])


@contextlib.contextmanager
def _locked(path: str):
  """Holds an exclusive lock on `path`'s lock file: one suite process reads and writes it at
  a time."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(f"{path}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def _record(out: str, args: argparse.Namespace, overrides: dict, family: str, size: int,
            model: str, seed: int, results: dict, measured_look: dict | None = None) -> None:
  """Adds one run's record to the JSON `out` as it is on disk now."""
  payload = _load(out)
  payload["environment"] = common.environment()
  records = _runs(payload, args.tag, family, size, model)
  payload["tags"][args.tag]["overrides"] = dict(overrides)
  recipe = _recipe(args.sampler_recipe)
  if recipe is not None:
    payload["tags"][args.tag]["sampler_recipe"] = recipe
  records[:] = [r for r in records if r["seed"] != seed]
  record = {"seed": seed, "top1": results["eval"]["top1"], "eval_loss": results["eval"]["loss"],
            "collapse": collapse(results["loss_curve"]), "loss_curve": results["loss_curve"],
            "steps": results["steps"], "images_per_sec": results["images_per_sec"]}
  # A sampler with the uniform view: each view's own top-1 beside the pooled prediction's.
  views = {view: results["eval"][f"top1_{view}"] for view in ("warped", "uniform")
           if f"top1_{view}" in results["eval"]}
  if views:
    record["top1_views"] = views
  if measured_look is not None:
    record["look"] = measured_look
  records.append(record)
  records.sort(key=lambda r: r["seed"])
  files.write_json(out, payload)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--families", default=",".join(FAMILIES))
  parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--steps", type=int, default=0, help="0: the config's num_train_steps")
  parser.add_argument("--tag", default="default", help="name of this recipe in the JSON")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="config override for every run (repeatable)")
  parser.add_argument("--sampler_recipe", action="store_true",
                      help="the sampler's runs take the recipe (configs/default.py's "
                           "with_sampler_recipe; the demo also sets model.cap_at_source)")
  parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "zoom_suite"))
  parser.add_argument("--out", default="")
  parser.add_argument("--look", action="store_true",
                      help="add the look to finished sampler runs' records that lack it")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: size 64, sampler and uniform, 1 seed, 8 steps, tiny data")
  args = parser.parse_args(argv)

  families = [f for f in args.families.split(",") if f]
  unknown = sorted(set(families) - set(FAMILIES))
  if unknown:
    raise SystemExit(f"--families: expected some of {FAMILIES}; got {unknown}.")
  models = [m for m in args.models.split(",") if m]
  if set(models) - set(MODELS):
    raise SystemExit(f"--models: expected some of {MODELS}; got {sorted(set(models) - set(MODELS))}.")
  sizes = [int(s) for s in args.sizes.split(",") if s]
  seeds = [int(s) for s in args.seeds.split(",") if s]
  overrides = parse_overrides(args.set)
  if args.quick:
    sizes, models, seeds = [64], ["saliency_sampler", "uniform"], [0]
    overrides = {"num_train_steps": 8, "batch_size": 8, "data.zoom.train_size": 64,
                 "data.zoom.eval_size": 16, "log_every_steps": 4, "eval_every_steps": 8,
                 "checkpoint_every_steps": 8, "num_panels": 0, **overrides}
  if args.steps:
    overrides["num_train_steps"] = args.steps
  from saliency_jax.train import config as config_lib  # pylint: disable=g-import-not-at-top
  # Every config is built (and validated) before anything is trained or written.
  plan = []
  for family in families:
    for size in sizes:
      for model in models:
        for seed in seeds:
          config = suite_config(family, size, model, seed, overrides,
                                sampler_recipe=args.sampler_recipe)
          config_lib.validate_config(config)
          plan.append((family, size, model, seed, config))

  import jax  # pylint: disable=g-import-not-at-top
  from saliency_jax.data import zoom_tasks  # pylint: disable=g-import-not-at-top
  from saliency_jax import train  # pylint: disable=g-import-not-at-top
  out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                 f"zoom_suite_{jax.default_backend()}"
                                 f"{'_quick' if args.quick else ''}.json")
  _check_tag(_load(out), args.tag, overrides, _recipe(args.sampler_recipe))
  for family, size, model, seed, config in plan:
    workdir = os.path.join(args.workdir, args.tag, family, str(size), model, f"seed{seed}")
    looks = model == "saliency_sampler"
    done = [r for r in _runs(_load(out), args.tag, family, size, model) if r["seed"] == seed]
    if done:
      if args.look and looks and "look" not in done[0]:
        measured = look(config, workdir, num_images=min(64, config.data.zoom.eval_size))
        with _locked(out):
          payload = _load(out)
          for record in _runs(payload, args.tag, family, size, model):
            if record["seed"] == seed:
              record["look"] = measured
          files.write_json(out, payload)
      continue
    print(f"\n=== {args.tag}: {family}, task size {size}, {model}, seed {seed} ===", flush=True)
    results = train.train_and_evaluate(config, workdir)
    measured = (look(config, workdir, num_images=min(64, config.data.zoom.eval_size))
                if looks else None)
    # Read again just before writing, under a lock, so that suites run side by side (other
    # tags, families, seeds) keep each other's runs; an interrupted suite loses one run at most.
    with _locked(out):
      _record(out, args, overrides, family, size, model, seed, results, measured)

  tag = _load(out)["tags"][args.tag]
  chance = {f: 1 / zoom_tasks.NUM_CLASSES[f] for f in FAMILIES}
  common.print_table(f"Zoom suite, tag {args.tag!r} (top-1 %, mean +- std over seeds)",
                     summarise(tag["runs"], chance),
                     ("family", "size", "model", "seeds", "top-1", "vs uniform",
                      "collapse", "zoom", "targets"))
  print(f"Wrote {out}")


if __name__ == "__main__":
  main()
