r"""Diagnostic: the zoom suite's ceiling, the task network behind a warp that already looks.

    python benchmarks/zoom_oracle.py --family=zoom_glyph --size=64 --steps=600
    python benchmarks/zoom_oracle.py --family=zoom_orientation --size=64 --steps=1500 --seeds=0,1

The sampler's saliency is replaced by an *oracle*: fixed logits of a Gaussian bump (amplitude
`--amplitude`, standard deviation 1.5 cells) on the centre of the target's box, on the sampler's
31x31 grid. Everything else is the suite's recipe for the task network (`configs/zoom_suite.py`:
resnet_tiny from scratch, batch 32, SGD with Nesterov momentum 0.9 at 0.05, linear warm-up then
cosine decay, clipping at norm 2, weight decay 5e-5) and the same attraction and bilinear
sampling as `SaliencySampler`. Only the task network learns. Its top-1 bounds what a learned
saliency can reach in the same steps, so that a learned sampler at chance can be read as "did not
learn to look" (the oracle reads) or as "the task network cannot learn this in these steps" (the
oracle does not either). Results are appended to `--out` (a JSON list).
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import saliency_jax as sj  # noqa: E402
from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402
from saliency_jax.data import zoom_tasks  # noqa: E402
from saliency_jax.models import factory  # noqa: E402
from saliency_jax.models import task as task_lib  # noqa: E402

GRID = 31
BATCH = 32
WIDTH = 1.5  # The bump's standard deviation in grid cells: about the target's own 3 cells.


def oracle_logits(boxes: np.ndarray, image_size: int, amplitude: float) -> np.ndarray:
  """`[B, 31, 31]` logits: a bump on each box's centre; boxes `(top, left, bottom, right)` px."""
  centres = (np.arange(GRID) + 0.5) * image_size / GRID
  cy = (boxes[:, 0] + boxes[:, 2])[:, None, None] / 2
  cx = (boxes[:, 1] + boxes[:, 3])[:, None, None] / 2
  cells2 = ((centres[None, :, None] - cy) ** 2 + (centres[None, None, :] - cx) ** 2) / (
      image_size / GRID) ** 2
  return (amplitude * np.exp(-cells2 / (2 * WIDTH ** 2))).astype(np.float32)


def run(family: str, size: int, steps: int, seed: int, amplitude: float, eval_size: int,
        repeats: int = 1, distractors: int = 3) -> dict:
  scene = {"repeats": repeats, "num_distractors": distractors, "seed": 0}
  train = zoom_tasks.ZoomTask(family=family, size=20_000, split="train", **scene)
  evaluation = zoom_tasks.ZoomTask(family=family, size=eval_size, split="eval", **scene)

  def batch(source, indices):
    examples = [source[int(i)] for i in indices]
    images = np.stack([e["image"] for e in examples])
    labels = np.array([e["label"] for e in examples])
    logits = oracle_logits(np.stack([e["box"] for e in examples]), images.shape[1], amplitude)
    return jnp.asarray(images), jnp.asarray(labels), jnp.asarray(logits)

  net = factory.build_task_net("resnet_tiny", num_outputs=zoom_tasks.NUM_CLASSES[family],
                               rngs=nnx.Rngs(seed))
  schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, max(1, steps // 10), steps)
  optimizer = nnx.Optimizer(net, optax.chain(
      optax.clip_by_global_norm(2.0), optax.add_decayed_weights(5e-5),
      optax.sgd(schedule, momentum=0.9, nesterov=True)), wrt=nnx.Param)

  def inputs(images, logits):
    sampled, _, _ = sj.saliency_sample(images, logits, (size, size))
    return task_lib.imagenet_normalize(sampled / 255.0)

  @nnx.jit
  def step(net, optimizer, images, labels, logits):
    def loss_fn(net):
      outputs, _ = net(inputs(images, logits))
      return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(net)
    optimizer.update(net, grads)
    return loss

  @nnx.jit
  def predict(net, images, logits):
    return net(inputs(images, logits))[0].argmax(-1)

  rng, start, losses = np.random.default_rng(seed), time.time(), []
  for i in range(steps):
    # Kept on the device: a float() per step would stop the next batch from being drawn while
    # the step runs.
    losses.append(step(net, optimizer, *batch(train, rng.integers(0, len(train), BATCH))))
    if (i + 1) % 100 == 0:
      losses[-100:] = [float(loss) for loss in losses[-100:]]
      print(f"{family} {size} seed {seed}: step {i + 1}/{steps} loss "
            f"{np.mean(losses[-100:]):.4f}", flush=True)
  net.eval()
  correct = 0
  for first in range(0, eval_size, 50):
    images, labels, logits = batch(evaluation, range(first, min(first + 50, eval_size)))
    correct += int((predict(net, images, logits) == labels).sum())
  return {"family": family, "size": size, "steps": steps, "seed": seed, "amplitude": amplitude,
          "repeats": repeats, "distractors": distractors,
          "top1": correct / eval_size, "final_loss": float(np.mean(losses[-100:])),
          "seconds": round(time.time() - start, 1)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--family", default="zoom_glyph", choices=zoom_tasks.FAMILIES)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--amplitude", type=float, default=6.0)
  parser.add_argument("--eval_size", type=int, default=500)
  parser.add_argument("--repeats", type=int, default=1, help="data.zoom.repeats")
  parser.add_argument("--distractors", type=int, default=3, help="data.zoom.num_distractors")
  parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                    f"zoom_oracle_{jax.default_backend()}.json"))
  args = parser.parse_args(argv)
  if (args.steps < 1 or args.size < 8 or args.amplitude < 0 or args.eval_size < 1
      or args.repeats < 1 or args.distractors < 0):
    parser.error("--steps, --eval_size, --repeats must be positive, --size at least 8, "
                 "--amplitude and --distractors >= 0.")
  records = []
  for seed in (int(s) for s in args.seeds.split(",")):
    records.append(run(args.family, args.size, args.steps, seed, args.amplitude, args.eval_size,
                       args.repeats, args.distractors))
    print(records[-1], flush=True)
  payload = {"runs": []}
  if os.path.exists(args.out):
    with open(args.out) as f:
      payload = json.load(f)
  payload["environment"] = common.environment()
  payload["runs"] = payload["runs"] + records
  files.write_json(args.out, payload)
  print(f"Wrote {args.out}")


if __name__ == "__main__":
  main()
