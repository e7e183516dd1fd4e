"""The train-step benchmark (benchmarks/train_step.py) on tiny sizes, so that CI catches breakage.

Besides running the benchmark's whole code path once (build, time, report, JSON), it checks that
the two sides time the same computation: given the same weights and batch, one PyTorch step of
the benchmark's port (torch_models' torchvision ResNets + torch_sampler.TunedSampler, PyTorch's
own SGD) and one step of the JAX trainer give the same loss and the same parameter updates in
each learning-rate group. PyTorch is the independent reference here.
"""

import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

from benchmarks import train_step as bench
from saliency_jax import models
from saliency_jax import train
from saliency_jax.models import convert

BATCH = 2
NUM_CLASSES = 10
# 64-pixel task images keep every BatchNorm of resnet_tiny over at least 8 values per channel at
# batch 2, so that the gradients are well conditioned enough to compare.
TINY = ["--batch", str(BATCH), "--image", "96", "--task", "64", "--task_net", "resnet_tiny",
        "--saliency_backbone", "resnet_tiny", "--num_classes", str(NUM_CLASSES), "--repeats", "1",
        "--warmup", "1", "--variants", "jax_fp32,torch_fp32,torch_amp"]
# torch_models.truncated_resnet is an nn.Sequential; its children's torchvision names.
SEQUENTIAL_NAMES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3"}


def _numpy_state(module):
  # Copies: JAX may wrap a NumPy array without copying on CPU, and the PyTorch step updates
  # its tensors in place.
  return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def _torchvision_names(state):
  renamed = {}
  for key, value in state.items():
    child, rest = key.split(".", 1)
    renamed[f"{SEQUENTIAL_NAMES[child]}.{rest}"] = value
  return renamed


def _load_torch_weights(jax_step, torch_model):
  """Puts the PyTorch model's weights into the JAX step's state (momentum still zero)."""
  # Abstract (shapes only): every variable is filled from PyTorch below.
  model = nnx.eval_shape(lambda: models.build_model(jax_step.config.model,
                                                    num_outputs=NUM_CLASSES, rngs=nnx.Rngs(0)))
  convert.load_resnet(model.task_net, _numpy_state(torch_model.task_net))
  if isinstance(torch_model, bench.TorchSaliencyModel):
    convert.load_resnet(model.saliency_net.backbone,
                        _torchvision_names(_numpy_state(torch_model.saliency_backbone)),
                        load_fc=False)
    head = torch_model.saliency_head
    model.saliency_net.head.kernel.set_value(
        head.weight.detach().numpy().transpose(2, 3, 1, 0).copy())
    model.saliency_net.head.bias.set_value(head.bias.detach().numpy().copy())
  model.train()
  _, params, model_state = nnx.split(model, nnx.Param, ...)
  state = jax_step.state.replace(params=params, model_state=model_state)
  jax_step.state = jax.device_put(state, jax_step.experiment.replicated)


def _jax_params(jax_step):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(jax_step.state.params))


def _torch_params(torch_model):
  return {k: v.detach().cpu().numpy().copy() for k, v in torch_model.named_parameters()}


# (torch parameter, JAX path, transpose from torch's layout to JAX's) in each learning-rate group.
TASK_FC = ("task_net.fc.weight", ("task_net", "fc", "kernel"), (1, 0))
GROUPS = {
    "uniform": [TASK_FC],
    "saliency_sampler": [
        TASK_FC,
        ("saliency_head.weight", ("saliency_net", "head", "kernel"), (2, 3, 1, 0)),
        ("saliency_backbone.0.weight", ("saliency_net", "backbone", "conv1", "kernel"),
         (2, 3, 1, 0)),
    ],
}


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


@pytest.fixture(scope="module")
def built():
  args = bench.parse_args(TINY)
  contenders, images = bench.build_contenders(args)
  return args, contenders, images


def test_trainer_config_is_the_trainers_with_the_benchmarked_model():
  config = bench.trainer_config("saliency_sampler", task_net="resnet50",
                                saliency_backbone="resnet18", task_size=227,
                                compute_dtype="bfloat16")
  defaults = train.config.flatten_config(train.base_config())
  given = train.config.flatten_config(config)
  # Everything else, the optimizer and the sampler's numerics included, is the trainer's default.
  assert {name for name in defaults if given[name] != defaults[name]} == {
      "model.task_size", "model.low_res_size", "compute_dtype", "num_panels"}
  with pytest.raises(ValueError, match="compute_dtype"):
    bench.trainer_config("uniform", task_net="resnet50", saliency_backbone="resnet18",
                         task_size=224, compute_dtype="float16")


def test_parse_args_rejects_unknown_variants_and_small_images():
  with pytest.raises(SystemExit):
    bench.parse_args(["--variants", "jax_fp32,torch_fp64"])
  with pytest.raises(SystemExit):
    bench.parse_args(["--image", "100", "--task", "224"])
  args = bench.parse_args(["--models", "uniform"])
  assert args.models == ["uniform"]
  assert "torch_compile" not in args.variants  # CPU default: compiling takes minutes.


def test_sampler_floor_bytes():
  # Per output pixel: 4 taps x 3 uint8 (12) + float32 RGB written and read back (2 x 12) +
  # float32 (x, y) grid (8) = 44 bytes.
  assert bench.sampler_floor_bytes(2, 32) == 2 * 32 * 32 * 44
  assert bench.sampler_floor_bytes(64, 224) == 64 * 224 * 224 * 44


@pytest.mark.parametrize("model_name", ["saliency_sampler", "uniform"])
def test_one_step_matches_pytorch(built, model_name):
  _, contenders, _ = built
  jax_step = contenders[model_name, "jax_fp32"]
  torch_step = contenders[model_name, "torch_fp32"]
  _load_torch_weights(jax_step, torch_step.model)
  jax_before, torch_before = _jax_params(jax_step), _torch_params(torch_step.model)

  torch_step()
  jax_step()

  np.testing.assert_allclose(jax_step.loss(), torch_step.loss(), rtol=1e-4)
  jax_after, torch_after = _jax_params(jax_step), _torch_params(torch_step.model)
  for torch_name, jax_path, layout in GROUPS[model_name]:
    torch_update = (torch_after[torch_name] - torch_before[torch_name]).transpose(layout)
    jax_update = _get(jax_after, jax_path) - _get(jax_before, jax_path)
    assert np.abs(torch_update).max() > 0, torch_name
    # Relative to the update's size, so a wrong learning-rate multiplier (10x apart: an error
    # of 0.9 or more) shows. The saliency gradients pass through bilinear taps of a random
    # image, where float32 rounding of the grid can move a tap: their updates agree to ~2e-3
    # (2.5e-2 for the head when XLA compiles without optimisation, as the tests do), the task
    # network's to ~1e-5.
    error = np.linalg.norm(jax_update - torch_update) / np.linalg.norm(torch_update)
    assert error < (5e-2 if torch_name.startswith("saliency") else 1e-2), (torch_name, error)


def test_benchmark_runs_and_reports(built, tmp_path):
  args, contenders, images = built
  args.output = str(tmp_path / "train_step.json")
  payload = bench.measure(args, contenders, images)
  with open(args.output) as f:
    written = json.load(f)
  assert written["results"].keys() == payload["results"].keys()
  expected = {f"{m} / {v}" for m in bench.MODELS for v in ("jax_fp32", "torch_fp32", "torch_amp")}
  assert set(written["results"]) == expected
  for name, r in written["results"].items():
    assert r["median_ms"] > 0 and len(r["all_ms"]) == 1, name
    assert r["images_per_s"] == pytest.approx(BATCH / (r["median_ms"] / 1e3))
    assert math.isfinite(r["last_loss"]), name
    assert r["peak_memory_bytes"] is None  # CPU: no allocator statistics.
    assert r["setup_s"] > 0 and r["first_call_s"] > 0, name
    baseline = written["results"][f"{r['model']} / torch_fp32"]["median_ms"]
    assert r["speedup_vs_torch_fp32"] == pytest.approx(baseline / r["median_ms"])
  for variant, share in written["saliency_overhead_vs_uniform"].items():
    saliency_ms = written["results"][f"saliency_sampler / {variant}"]["median_ms"]
    uniform_ms = written["results"][f"uniform / {variant}"]["median_ms"]
    assert share == pytest.approx((saliency_ms - uniform_ms) / saliency_ms)
  sampler = written["sampler"]
  assert sampler["floor_bytes"] == BATCH * 64 * 64 * 44
  assert sampler["floor_ms"] == pytest.approx(
      sampler["floor_bytes"] / (sampler["bandwidth_gbs"] * 1e9) * 1e3)
  assert sampler["times_floor"] == pytest.approx(sampler["median_ms"] / sampler["floor_ms"])
  step_ms = written["results"]["saliency_sampler / jax_fp32"]["median_ms"]
  assert sampler["fraction_of_jax_step"] == {"jax_fp32": pytest.approx(
      sampler["median_ms"] / step_ms)}
  assert written["environment"]["jax_backend"] == "cpu"
  assert written["settings"]["batch"] == BATCH
  assert written["command"].startswith("python benchmarks/train_step.py --batch 2")


def test_compiled_step_bytes_cover_the_state(built):
  # XLA's buffer assignment of the step holds at least the parameters and momentum it reads.
  _, contenders, _ = built
  step = contenders["uniform", "jax_fp32"]
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(step.state))
  assert step.step_bytes() >= state_bytes
