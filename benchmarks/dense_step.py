"""Benchmark: the dense model's training step, and what its unwarp adds to it.

Times, interleaved in one run (medians, `common.interleaved_medians`), one jitted training step
(forward, backward, SGD update; `saliency_jax.train.experiment.build_experiment`) of
`configs/dense_scenes.py` (512 px scenes, batch 16, a tiny ResNet at 128 px, stages 2-4
unwarped to stride 8, segmentation):
- unwarp: the model as it is;
- resize instead: the same step with each stage brought to the output frame by a plain bilinear
  resize (`jax.image.resize`) instead of `ops.unwarp`, i.e. without the inverse warp: the
  difference is what the unwarp costs (its forward and backward);
- uniform: the uniform baseline (identity grid, no saliency network), for scale;
- the first two again with `model.axis_aligned=True` (LZU's and FOVEA's separable warp, which
  `ops.unwarp` inverts by its exact 1-D fast path);
- small: `configs/dense_scenes_small.py` (the 2-D grid, the saliency network supervised by the
  boxes at a 128 px view, the warp's gradient cut, AdamW), with its unwarp and with resizes
  instead, and with the warp's gradient (`model.warp_gradient=True`): what the cut saves.
The issue's target: the unwarp adds at most 10 % to the step.

  python benchmarks/dense_step.py            # the config's sizes, 5 repetitions
  python benchmarks/dense_step.py --quick    # tiny sizes, 2 repetitions: a smoke test only
Writes benchmarks/results/dense_step_<backend>.json (with the environment), or `--output`.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402
from configs import dense_scenes  # noqa: E402
from configs import dense_scenes_small  # noqa: E402
from saliency_jax import data  # noqa: E402
from saliency_jax.models import dense  # noqa: E402
from saliency_jax import train  # noqa: E402


def _resize_instead(maps, grid, out_shape, *, source_shape=None, axis_aligned=False):
  """`ops.unwarp`'s signature (a list of maps) without the inverse warp: plain bilinear resizes."""
  del grid, source_shape, axis_aligned
  resized = [jax.image.resize(f.astype(jnp.float32), (f.shape[0], *out_shape, f.shape[-1]),
                              "bilinear") for f in maps]
  return resized, jnp.ones((maps[0].shape[0], *out_shape), bool)


class _PlainOps:
  """`saliency_jax.ops` for the dense module, with `unwarp` replaced."""

  def __init__(self, ops):
    self._ops = ops

  def __getattr__(self, name):
    return _resize_instead if name == "unwarp" else getattr(self._ops, name)


def _config(quick: bool, module=dense_scenes):
  config = module.get_config()
  if quick:
    config.data.image_size = 272
    config.data.dense.update(max_large=1, max_small=2)
    config.model.task_size, config.model.low_res_size = 64, 32
    config.batch_size = 2
  return config


def _step(config, batch, mesh, *, plain: bool, **model_fields):
  """A callable running one training step (blocking) of `config` with `model_fields` set, its
  state carried from call to call."""
  config = config.copy_and_resolve_references()
  config.model.update(model_fields)
  original = dense.ops
  if plain:
    dense.ops = _PlainOps(original)
  try:
    experiment = train.build_experiment(
        config, mesh=mesh, num_outputs=config.data.dense.num_classes,
        task="segmentation", total_steps=1000, steps_per_epoch=100.0, blur_steps=0)
    state = {"state": experiment.initial_state}

    def run():
      state["state"], metrics = experiment.train_step(state["state"], batch, False)
      jax.block_until_ready(metrics["loss"])

    run()  # Compiles while `dense.ops` is the variant's.
  finally:
    dense.ops = original
  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--repeats", type=int, default=0)
  parser.add_argument("--output", default=None,
                      help="the JSON to write (default: results/dense_step[_quick]_<backend>.json)")
  args = parser.parse_args(argv)
  config = _config(args.quick)
  repeats = args.repeats or (2 if args.quick else 5)
  # A smoke test on one device: compiling for a host's every (virtual) device costs more.
  mesh = train.make_mesh(jax.devices()[:1] if args.quick else None)
  loader = data.make_loader(config.data, split="train", global_batch_size=config.batch_size,
                            mesh=mesh, seed=0)
  batch = next(iter(loader))
  loader.close()
  small = _config(args.quick, dense_scenes_small)
  steps = {"unwarp": _step(config, batch, mesh, saliency="network", plain=False),
           "resize instead": _step(config, batch, mesh, saliency="network", plain=True),
           "uniform": _step(config, batch, mesh, saliency="none", plain=False),
           "unwarp, axis-aligned": _step(config, batch, mesh, saliency="network", plain=False,
                                         axis_aligned=True),
           "resize instead, axis-aligned": _step(config, batch, mesh, saliency="network",
                                                 plain=True, axis_aligned=True),
           "small": _step(small, batch, mesh, plain=False),
           "small, resize instead": _step(small, batch, mesh, plain=True),
           "small, the warp's gradient": _step(small, batch, mesh, plain=False,
                                               warp_gradient=True)}
  times = common.interleaved_medians(steps, repeats=repeats, warmup=1, min_sample_s=0)
  median = {name: t["median_ms"] for name, t in times.items()}
  share = median["unwarp"] / median["resize instead"] - 1
  share_aligned = median["unwarp, axis-aligned"] / median["resize instead, axis-aligned"] - 1
  share_small = median["small"] / median["small, resize instead"] - 1
  rows = [(name, f"{t['median_ms']:.0f}") for name, t in times.items()]
  common.print_table(f"Dense training step, batch {config.batch_size}, {config.data.image_size} "
                     f"-> {config.model.task_size} (median ms of {repeats})", rows,
                     ("step", "ms"))
  print(f"The unwarp adds {share:+.1%} to the step, {share_aligned:+.1%} with an axis-aligned "
        f"warp, {share_small:+.1%} to dense_scenes_small's (target: at most +10 %).")
  payload = {"environment": common.environment(), "quick": args.quick, "repeats": repeats,
             "batch_size": config.batch_size, "image_size": config.data.image_size,
             "task_size": config.model.task_size, "times": times, "unwarp_share": share,
             "unwarp_share_axis_aligned": share_aligned, "unwarp_share_small": share_small}
  name = "dense_step_quick" if args.quick else "dense_step"
  files.write_json(args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "results", f"{name}_{jax.default_backend()}.json"),
                   payload)


if __name__ == "__main__":
  main()
