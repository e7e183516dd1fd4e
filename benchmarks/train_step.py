"""Benchmark: one training step of the saliency sampler model, JAX against a PyTorch port.

The model of the paper's ImageNet/iNaturalist experiments: a uint8 800x800 image is area-averaged
to a 224x224 view, a ResNet-18 truncated after layer3 (14 layers) + ReLU + 1x1 head predicts
saliency logits, upsampled to a 31x31 grid; softmax, Gaussian attraction grid, bilinear sampling
of the full image at 224x224, ResNet-50 with 1000 classes. Also the "uniform" model, the same
ResNet-50 fed the image area-averaged to 224x224, so that the sampler's own cost is visible.

One training step is: forward, softmax cross-entropy, backward, SGD (momentum 0.9, weight
decay 1e-4, learning rates x1 for the task network, x0.01 for the saliency head, x0.001 for the
saliency backbone), BatchNorm in training mode, no blur warm-up. Contenders (`--variants`):
- jax_fp32, jax_bf16: the trainer's own jitted step (`saliency_jax.train.build_experiment`, the
  state donated), float32 or bfloat16 compute (`compute_dtype`, float32 parameters), on one
  device of jax's default backend;
- torch_fp32: PyTorch eager, float32, channels_last;
- torch_amp: PyTorch eager, bfloat16 autocast, channels_last (bfloat16 on CPU and CUDA alike, so
  no loss scaling is needed and the dtype matches jax_bf16);
- torch_compile: `torch.compile` of the torch_amp model.
Default: all on a GPU; on CPU jax_fp32, jax_bf16 and torch_fp32 (see `CPU_VARIANTS`).
The PyTorch model is built from `torch_models` (torchvision's ResNets) and
`torch_sampler.TunedSampler` (separable Gaussian), the sampler kept in float32 under autocast as
the JAX model keeps it; its input is the same uint8 batch, converted to float on the device
(`grid_sample` reads float images only). Everything runs on one device (CUDA for torch when
available, jax's default backend), in one process, interleaved, medians over `--repeats`.

Also times the sampler alone in JAX (saliency logits -> sampled image, forward + backward to the
logits, uint8 image) at the same batch, as a fraction of the JAX train step and against a
memory-bandwidth floor: the bytes it must move (per output pixel: 4 taps x 3 uint8 bytes read,
the float32 output written and read back in the backward, the float32 (x, y) grid) over a
bandwidth measured with a large on-device copy in JAX (or `--bandwidth_gbs`).

Peak device memory per contender (GPU only): torch, the allocator's peak during one step above
what was allocated before it, plus the contender's own resident tensors (parameters, momentum,
input batch); jax, XLA's buffer assignment of the compiled step (arguments + outputs - donated
aliases + temporaries), because `peak_bytes_in_use` is a process-wide high-water mark that cannot
be reset between contenders (it is reported once, process-wide). On CPU neither framework keeps
device allocator statistics (`memory_stats()` is None, no `torch.cuda`), so memory is null.

Usage (runs unchanged on CPU and on a GPU; needs jax, flax, optax, orbax-checkpoint,
ml_collections, grain, pillow and torch, not tfds):
  python benchmarks/train_step.py                      # GPU: batch 64; CPU: batch 4
  python benchmarks/train_step.py --batch 32 --repeats 20 --variants jax_bf16,torch_compile
  python benchmarks/train_step.py --variants torch_fp32,torch_amp --image 400   # CPU, opt-in
Writes benchmarks/results/train_step_<backend>.json.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# JAX and PyTorch share the GPU: JAX must not grab most of its memory up front, and allocating
# on demand makes its peak comparable with PyTorch's caching allocator.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import saliency_jax as sj  # noqa: E402
from benchmarks import common  # noqa: E402
from saliency_jax import files  # noqa: E402
from tests.references import torch_models  # noqa: E402
from tests.references import torch_sampler  # noqa: E402
from saliency_jax import train  # noqa: E402
from saliency_jax.models import saliency_network  # noqa: E402

MODELS = ("saliency_sampler", "uniform")
JAX_VARIANTS = ("jax_fp32", "jax_bf16")
TORCH_VARIANTS = ("torch_fp32", "torch_amp", "torch_compile")
VARIANTS = JAX_VARIANTS + TORCH_VARIANTS
# On CPU, torch.compile takes minutes to compile and bfloat16 autocast runs several times slower
# than float32 on processors without native bfloat16 (measured: ~5x on this project's 2-core
# machine), so both are opt-in there, to keep the default run to a few minutes.
CPU_VARIANTS = ("jax_fp32", "jax_bf16", "torch_fp32")
BASELINE = "torch_fp32"  # Speed-ups are given against PyTorch eager float32.

# The authors' recipe and sampler, as the trainer's defaults hold them; the PyTorch port is
# configured from the same values.
_DEFAULTS = train.base_config()
LEARNING_RATE = _DEFAULTS.optimizer.learning_rate
MOMENTUM = _DEFAULTS.optimizer.momentum
WEIGHT_DECAY = _DEFAULTS.optimizer.weight_decay
LR_MULTIPLIERS = dict(_DEFAULTS.optimizer.lr_multipliers)
GRID_SIZE = _DEFAULTS.model.grid_size
PADDING = _DEFAULTS.model.padding
FWHM = _DEFAULTS.model.fwhm
SALIENCY_DEPTH = _DEFAULTS.model.saliency_depth  # 14: ResNet-18 up to layer3.
SALIENCY_STAGES = saliency_network.DEPTHS[SALIENCY_DEPTH]

MIB = 2**20


def on_gpu() -> bool:
  return jax.default_backend() == "gpu" or torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------
# JAX: the trainer's step.


def trainer_config(model_name: str, *, task_net: str, saliency_backbone: str, task_size: int,
                   compute_dtype: str, seed: int = 0) -> ml_collections.ConfigDict:
  """The trainer's config (`train.base_config()`: the authors' recipe) for this model, checked.

  Raises:
    ValueError: a `train.ConfigError` naming a bad field (e.g. `compute_dtype`).
  """
  config = train.base_config()
  config.seed = seed
  model = config.model
  model.name, model.task_net, model.saliency_backbone = model_name, task_net, saliency_backbone
  model.task_size = model.low_res_size = task_size
  config.compute_dtype = compute_dtype
  config.num_panels = 0
  train.validate_config(config)
  return config


class JaxTrainStep:
  """The trainer's jitted step on one device, compiled ahead of time, its state carried along.

  Args:
    config: from `trainer_config`.
    images: `[B, H, W, 3]` uint8 NumPy batch.
    labels: `[B]` int NumPy class ids.
    num_classes: outputs of the task network.
  """

  def __init__(self, config: ml_collections.ConfigDict, images: np.ndarray, labels: np.ndarray,
               *, num_classes: int):
    # One device: the comparison is per device, like PyTorch's single-device step.
    mesh = train.make_mesh(jax.devices()[:1])
    self.config = config
    self.experiment = train.build_experiment(
        config, mesh=mesh, num_outputs=num_classes, task="classification", total_steps=1000,
        steps_per_epoch=100.0, blur_steps=0)
    self.state = self.experiment.initial_state
    sharding = NamedSharding(mesh, PartitionSpec(*mesh.axis_names))  # The batch axis.
    self.batch = jax.device_put(
        {"image": images, "label": labels.astype(np.int32),
         "mask": np.ones(len(labels), dtype=bool)}, sharding)
    # Compiled once here, so that the timing never includes compilation and the memory
    # analysis describes exactly the executable that runs.
    self.compiled = self.experiment.train_step.lower(self.state, self.batch, False).compile()
    self.metrics = None

  def __call__(self) -> None:
    self.state, self.metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready((self.state, self.metrics))

  def loss(self) -> float:
    return float(self.metrics["loss"])

  def step_bytes(self) -> int:
    """XLA's buffer assignment of one step: arguments + outputs - donated aliases + temporaries."""
    return compiled_bytes(self.compiled)

  def peak_memory_bytes(self) -> int | None:
    return self.step_bytes() if jax.default_backend() != "cpu" else None


def compiled_bytes(compiled: jax.stages.Compiled) -> int:
  """Device bytes a compiled executable holds while it runs, from XLA's buffer assignment."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
             + m.temp_size_in_bytes)


# ---------------------------------------------------------------------------------------------
# PyTorch: the same models.


class _ImageNetNormalize(nn.Module):
  """`(x - mean) / std` with the constants as buffers, so that they live on the model's device."""

  def __init__(self):
    super().__init__()
    self.register_buffer("mean", torch.tensor(torch_models.IMAGENET_MEAN).reshape(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(torch_models.IMAGENET_STD).reshape(1, 3, 1, 1))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return (x - self.mean) / self.std


def _backbone_channels(name: str, num_stages: int) -> int:
  block, _, width = torch_models.RESNET_SPECS[name]
  expansion = 4 if block == "bottleneck" else 1
  return width * 2**(num_stages - 1) * expansion


class TorchSaliencyModel(torch_models.SaliencySampler):
  """The saliency sampler model in PyTorch, NCHW; `forward(uint8 images) -> logits`.

  The authors' layer (`tests/references/torch_models.SaliencySampler`: the area-averaged view,
  truncated ResNet + ReLU + 1x1 head, logits upsampled to the grid) with the grid and the
  sampling of the tuned PyTorch sampler (`torch_sampler.TunedSampler`: softmax, separable
  Gaussian attraction, `grid_sample` with `align_corners=True`), as a PyTorch user who tuned it
  would run it; the sampler in float32 even under autocast: a bfloat16 grid would be off by
  pixels at 800x800.
  """

  def __init__(self, *, task_net: str, saliency_backbone: str, task_size: int,
               num_classes: int, device: str):
    super().__init__(
        torch_models.resnet(task_net, num_classes),
        torch_models.truncated_resnet(torch_models.resnet(saliency_backbone), SALIENCY_STAGES),
        _backbone_channels(saliency_backbone, SALIENCY_STAGES), task_size=task_size,
        low_res_size=task_size, grid_size=GRID_SIZE, padding=PADDING, fwhm=FWHM)
    self.sampler = torch_sampler.TunedSampler((GRID_SIZE, GRID_SIZE), (task_size, task_size),
                                              fwhm=FWHM, padding=PADDING, device=device)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255.0
    logits = self.saliency_logits(x)
    with torch.autocast(x.device.type, enabled=False):
      sampled, _, _ = self.sampler(x, logits.float(), align_corners=True)
    return self.task_net(self.normalize(sampled))

  def param_groups(self) -> list[dict]:
    return [
        {"params": list(self.task_net.parameters()), "lr_multiplier": LR_MULTIPLIERS["task"]},
        {"params": list(self.saliency_head.parameters()),
         "lr_multiplier": LR_MULTIPLIERS["saliency_head"]},
        {"params": list(self.saliency_backbone.parameters()),
         "lr_multiplier": LR_MULTIPLIERS["saliency_backbone"]},
    ]


class TorchUniformModel(nn.Module):
  """The uniform baseline in PyTorch: area average to the task size, then the task network."""

  def __init__(self, *, task_net: str, task_size: int, num_classes: int):
    super().__init__()
    self.task_net = torch_models.resnet(task_net, num_classes)
    self.normalize = _ImageNetNormalize()
    self.task_size = task_size

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    view = F.adaptive_avg_pool2d(images.float() / 255.0, self.task_size)
    return self.task_net(self.normalize(view))

  def param_groups(self) -> list[dict]:
    return [{"params": list(self.task_net.parameters()), "lr_multiplier": LR_MULTIPLIERS["task"]}]


def torch_model(model_name: str, *, task_net: str, saliency_backbone: str, task_size: int,
                num_classes: int, device: str) -> nn.Module:
  if model_name == "saliency_sampler":
    return TorchSaliencyModel(task_net=task_net, saliency_backbone=saliency_backbone,
                              task_size=task_size, num_classes=num_classes, device=device)
  if model_name == "uniform":
    return TorchUniformModel(task_net=task_net, task_size=task_size, num_classes=num_classes)
  raise ValueError(f"model_name must be one of {MODELS}; got {model_name!r}.")


def torch_optimizer(model: nn.Module) -> torch.optim.SGD:
  """PyTorch's SGD with the recipe's momentum, weight decay and per-group learning rates."""
  groups = [{"params": g["params"], "lr": LEARNING_RATE * g["lr_multiplier"]}
            for g in model.param_groups()]
  return torch.optim.SGD(groups, lr=LEARNING_RATE, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


class TorchTrainStep:
  """One PyTorch training step: channels_last, optional bfloat16 autocast and `torch.compile`.

  Args:
    model: a `TorchSaliencyModel` or `TorchUniformModel`, already on `images`' device.
    images: `[B, 3, H, W]` uint8 on the device.
    labels: `[B]` int64 on the device.
    amp: bfloat16 autocast of the networks.
    compile: `torch.compile` the model.
  """

  def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
               amp: bool, compile: bool):  # pylint: disable=redefined-builtin
    self.device = images.device
    self.model = model.to(memory_format=torch.channels_last).train()
    self.forward = torch.compile(self.model) if compile else self.model
    self.optimizer = torch_optimizer(self.model)
    self.images = images.contiguous(memory_format=torch.channels_last)
    self.labels = labels
    self.amp = amp
    self.last_loss = None

  def _sync(self) -> None:
    if self.device.type == "cuda":
      torch.cuda.synchronize(self.device)

  def __call__(self) -> None:
    self.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
      logits = self.forward(self.images)
    loss = F.cross_entropy(logits.float(), self.labels)
    loss.backward()
    self.optimizer.step()
    self.last_loss = loss.detach()
    self._sync()

  def loss(self) -> float:
    return float(self.last_loss)

  def resident_bytes(self) -> int:
    """Parameters, buffers, momentum and the input batch: what stays allocated between steps."""
    tensors = list(self.model.parameters()) + list(self.model.buffers()) + [
        self.images, self.labels]
    tensors += [t for s in self.optimizer.state.values() for t in s.values()
                if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)

  def peak_memory_bytes(self) -> int | None:
    """Resident bytes plus the allocator's peak during one step above what was in use before."""
    if self.device.type != "cuda":
      return None
    self._sync()
    before = torch.cuda.memory_allocated(self.device)
    torch.cuda.reset_peak_memory_stats(self.device)
    self()
    transient = torch.cuda.max_memory_allocated(self.device) - before
    return self.resident_bytes() + transient


# ---------------------------------------------------------------------------------------------
# The sampler alone, and its memory-bandwidth floor.


def sampler_floor_bytes(batch: int, task_size: int, channels: int = 3) -> int:
  """Bytes the sampler's forward + backward must move at the least.

  Per output pixel: 4 bilinear taps of `channels` uint8 bytes read, the float32 output written
  in the forward and read back (as its cotangent) in the backward, the float32 (x, y) grid.
  """
  per_pixel = 4 * channels * 1 + 2 * channels * 4 + 2 * 4
  return batch * task_size * task_size * per_pixel


class SamplerStep:
  """Saliency logits -> sampled image, forward and backward to the logits, in JAX.

  The loss is the dot product with a fixed random cotangent, so that the backward reads a real
  upstream gradient as in training; the uint8 image takes no gradient.
  """

  def __init__(self, images: np.ndarray, *, task_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    batch = images.shape[0]
    self.images = jax.device_put(images, jax.devices()[0])
    self.logits = jax.device_put(
        rng.normal(size=(batch, GRID_SIZE, GRID_SIZE)).astype(np.float32), jax.devices()[0])
    self.cotangent = jax.device_put(
        rng.normal(size=(batch, task_size, task_size, 3)).astype(np.float32), jax.devices()[0])
    out_shape = (task_size, task_size)

    def loss(logits, images, cotangent):
      sampled, _, _ = sj.saliency_sample(images, logits, out_shape, align_corners=True,
                                         fwhm=FWHM, padding=PADDING)
      return jnp.vdot(sampled, cotangent)

    self.compiled = jax.jit(jax.grad(loss)).lower(
        self.logits, self.images, self.cotangent).compile()

  def __call__(self) -> None:
    jax.block_until_ready(self.compiled(self.logits, self.images, self.cotangent))


def measure_bandwidth_gbs(*, mib: int, repeats: int = 10) -> float:
  """Device memory bandwidth in GB/s from a large elementwise copy (read + write) in JAX.

  `mib` should be far larger than any cache, and large enough that the dispatch overhead of one
  call (tens of microseconds) is small against the copy.
  """
  nbytes = mib * MIB
  buffer = [jax.device_put(np.zeros(nbytes // 4, np.float32), jax.devices()[0])]
  # Donated and carried: the copy writes over its input, so that no call pays for allocating
  # (and on CPU, page-faulting) a fresh output.
  copy = jax.jit(lambda v: v + 1.0, donate_argnums=0).lower(buffer[0]).compile()

  def step():
    buffer[0] = copy(buffer[0])
    jax.block_until_ready(buffer[0])

  timing = common.interleaved_medians({"copy": step}, repeats=repeats)
  return 2 * nbytes / (timing["copy"]["median_ms"] * 1e-3) / 1e9


# ---------------------------------------------------------------------------------------------
# The run.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  gpu = on_gpu()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64 if gpu else 4)
  parser.add_argument("--image", type=int, default=800, help="side of the uint8 input images")
  parser.add_argument("--task", type=int, default=224,
                      help="side of the task network's input (and of the saliency view)")
  parser.add_argument("--repeats", type=int, default=10 if gpu else 3)
  parser.add_argument("--warmup", type=int, default=3 if gpu else 1,
                      help="untimed calls of each contender before the timed ones (at least 1)")
  parser.add_argument("--variants", default=None,
                      help=f"comma-separated of {VARIANTS}; default: all on GPU, {CPU_VARIANTS} "
                      f"on CPU")
  parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated of {MODELS}")
  parser.add_argument("--task_net", default="resnet50")
  parser.add_argument("--saliency_backbone", default="resnet18")
  parser.add_argument("--num_classes", type=int, default=1000)
  parser.add_argument("--bandwidth_gbs", type=float, default=None,
                      help="device memory bandwidth for the sampler's floor; default: measured")
  parser.add_argument("--output", default=None,
                      help="JSON path (default: benchmarks/results/train_step_<backend>.json)")
  args = parser.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  if args.variants is None:
    args.variants = ",".join(VARIANTS if gpu else CPU_VARIANTS)
  for field, allowed in (("variants", VARIANTS), ("models", MODELS)):
    chosen = getattr(args, field).split(",")
    unknown = [c for c in chosen if c not in allowed]
    if unknown or not chosen:
      parser.error(f"--{field}: expected a comma-separated subset of {allowed}; got "
                   f"{getattr(args, field)!r}.")
    setattr(args, field, chosen)
  if args.warmup < 1 or args.repeats < 1:
    parser.error(f"--warmup and --repeats must be at least 1; got {args.warmup} and "
                 f"{args.repeats}.")
  if args.image < args.task:
    parser.error(f"--image must be at least --task ({args.task}); got {args.image}.")
  return args


def build_contenders(args: argparse.Namespace) -> tuple[dict, np.ndarray]:
  """`({(model, variant): step}, images)`: a step for every requested pair, all fed `images`.

  Images are `[B, image, image, 3]` uint8 NumPy, uniformly random (the data does not change
  the work), labels uniformly random among `num_classes`.
  """
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch, args.image, args.image, 3), dtype=np.uint8)
  labels = rng.integers(0, args.num_classes, (args.batch,))
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    # What a careful PyTorch user sets: cuDNN autotuning, and TF32 matrix products as JAX uses
    # by default on GPUs for float32.
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
  torch_images = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
  torch_labels = torch.from_numpy(labels).to(device)
  nets = {"task_net": args.task_net, "saliency_backbone": args.saliency_backbone}
  contenders = {}
  for model_name in args.models:
    for variant in args.variants:
      print(f"building {model_name} / {variant}", flush=True)
      start = time.perf_counter()
      if variant in JAX_VARIANTS:
        dtype = "bfloat16" if variant == "jax_bf16" else "float32"
        config = trainer_config(model_name, task_size=args.task,
                                compute_dtype=dtype, **nets)
        step = JaxTrainStep(config, images, labels, num_classes=args.num_classes)
      else:
        torch.manual_seed(0)
        model = torch_model(model_name, task_size=args.task, num_classes=args.num_classes,
                            device=device, **nets).to(device)
        step = TorchTrainStep(model, torch_images, torch_labels,
                              amp=variant != "torch_fp32", compile=variant == "torch_compile")
      # JAX: initialisation and compilation; PyTorch: initialisation (it compiles when called).
      step.setup_s = time.perf_counter() - start
      contenders[model_name, variant] = step
  return contenders, images


def run(args: argparse.Namespace) -> dict:
  """Builds, times and reports every contender; returns the results (also written as JSON)."""
  return measure(args, *build_contenders(args))


def measure(args: argparse.Namespace, contenders: dict, images: np.ndarray) -> dict:
  """Times `build_contenders`' steps and the sampler alone, prints and writes the results."""
  env = common.environment()
  timed = {f"{model} / {variant}": step for (model, variant), step in contenders.items()}
  sampler = None
  if "saliency_sampler" in args.models:
    sampler = SamplerStep(images, task_size=args.task)
    timed["sampler alone (jax, fwd+bwd)"] = sampler

  # A first call each: torch.compile compiles and cuDNN autotunes here, not while timed or while
  # the peak memory is read (a step of its own for PyTorch on a GPU; JAX's is from the
  # compiled step).
  first_call_s = {}
  for name, step in timed.items():
    print(f"first call of {name}", flush=True)
    start = time.perf_counter()
    step()
    first_call_s[name] = time.perf_counter() - start
  print(f"timing: {args.warmup - 1} warm-up and {args.repeats} timed calls each, interleaved",
        flush=True)
  memory = {name: step.peak_memory_bytes() if hasattr(step, "peak_memory_bytes") else None
            for name, step in timed.items()}
  # One call per sample: a step is long, and each call advances the carried state.
  timings = common.interleaved_medians(timed, repeats=args.repeats, warmup=args.warmup - 1,
                                       min_sample_s=0.0)

  results = {}
  for (model, variant), step in contenders.items():
    name = f"{model} / {variant}"
    t = timings[name]
    baseline = timings.get(f"{model} / {BASELINE}")
    results[name] = {
        "model": model, "variant": variant, "median_ms": t["median_ms"], "min_ms": t["min_ms"],
        "all_ms": t["all_ms"], "images_per_s": args.batch / (t["median_ms"] * 1e-3),
        "speedup_vs_torch_fp32": baseline["median_ms"] / t["median_ms"] if baseline else None,
        "peak_memory_bytes": memory[name], "setup_s": step.setup_s,
        "first_call_s": first_call_s[name], "last_loss": step.loss()}

  payload = {
      "environment": env,
      "command": " ".join(["python benchmarks/train_step.py", *args.argv]),
      "settings": {"batch": args.batch, "image": args.image, "task": args.task,
                   "grid": GRID_SIZE, "task_net": args.task_net,
                   "saliency_backbone": f"{args.saliency_backbone} (to layer3, 14 layers)",
                   "num_classes": args.num_classes, "models": args.models,
                   "variants": args.variants, "repeats": args.repeats,
                   "warmup": args.warmup, "jax_device": str(jax.devices()[0]),
                   "torch_device": "cuda" if torch.cuda.is_available() else "cpu"},
      "results": results,
      "memory_note": {
          "jax": "XLA buffer assignment of the compiled step (arguments + outputs - donated "
                 "aliases + temporaries)" if jax.default_backend() != "cpu" else
                 "null: the CPU backend keeps no allocator statistics (memory_stats() is None)",
          "torch": "allocator peak during one step above the memory in use before it + the "
                   "contender's resident tensors (parameters, buffers, momentum, batch)"
                   if torch.cuda.is_available() else
                   "null: PyTorch keeps allocator statistics only for CUDA devices"},
  }
  if set(MODELS) <= set(args.models):
    # The whole price of zooming: the saliency network, the grid and the sampling.
    payload["saliency_overhead_vs_uniform"] = {
        variant: 1.0 - results[f"uniform / {variant}"]["median_ms"]
        / results[f"saliency_sampler / {variant}"]["median_ms"] for variant in args.variants}
  stats = jax.devices()[0].memory_stats()
  if stats:
    payload["jax_process_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")

  if sampler is not None:
    copy_mib = 1024 if jax.default_backend() == "gpu" else 256
    bandwidth = args.bandwidth_gbs or measure_bandwidth_gbs(mib=copy_mib,
                                                            repeats=max(args.repeats, 5))
    floor_bytes = sampler_floor_bytes(args.batch, args.task)
    floor_ms = floor_bytes / (bandwidth * 1e9) * 1e3
    sampler_ms = timings["sampler alone (jax, fwd+bwd)"]["median_ms"]
    fractions = {variant: sampler_ms / results[f"saliency_sampler / {variant}"]["median_ms"]
                 for variant in args.variants if variant in JAX_VARIANTS}
    payload["sampler"] = {
        **timings["sampler alone (jax, fwd+bwd)"],
        "first_call_s": first_call_s["sampler alone (jax, fwd+bwd)"],
        "fraction_of_jax_step": fractions,
        "floor_bytes": floor_bytes,
        "bandwidth_gbs": bandwidth,
        "bandwidth_source": "--bandwidth_gbs" if args.bandwidth_gbs else
                            f"measured: jitted x + 1 on {copy_mib} MiB float32 (read + write)",
        "floor_ms": floor_ms,
        "times_floor": sampler_ms / floor_ms,
    }
  report(payload, args)
  output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                       f"train_step_{env['jax_backend']}.json")
  files.write_json(output, payload)
  print(f"\nwrote {output}")
  return payload


def _mib(value: int | None) -> str:
  return "n/a" if value is None else f"{value / MIB:.0f}"


def report(payload: dict, args: argparse.Namespace) -> None:
  """Prints the results as tables."""
  env = payload["environment"]
  rows = []
  for name, r in payload["results"].items():
    speedup = r["speedup_vs_torch_fp32"]
    rows.append((name, f"{r['median_ms']:.1f}", f"{r['images_per_s']:.1f}",
                 "n/a" if speedup is None else f"{speedup:.2f}x",
                 _mib(r["peak_memory_bytes"]), f"{r['setup_s']:.0f}",
                 f"{r['first_call_s']:.1f}"))
  common.print_table(
      f"train step: batch {args.batch}, {args.image}x{args.image} uint8 -> "
      f"{args.task}x{args.task}, {args.task_net} + {args.saliency_backbone}/14, median of "
      f"{args.repeats} (jax {env['jax_backend']}, torch {payload['settings']['torch_device']})",
      rows, ("contender", "ms", "images/s", f"vs {BASELINE}", "peak MiB", "setup s",
             "first call s"))
  rows = []
  s = payload.get("sampler")
  if s:
    rows += [("sampler alone (jax, uint8 image), fwd+bwd", f"{s['median_ms']:.2f} ms")]
    rows += [(f"  as a fraction of saliency_sampler / {v}", f"{100 * f:.1f}%")
             for v, f in s["fraction_of_jax_step"].items()]
    rows += [("  bandwidth floor", f"{s['floor_ms']:.3f} ms at {s['bandwidth_gbs']:.1f} GB/s"),
             ("  sampler / floor", f"{s['times_floor']:.1f}x")]
  rows += [(f"share of saliency_sampler / {v} not in uniform / {v}", f"{100 * f:.1f}%")
           for v, f in payload.get("saliency_overhead_vs_uniform", {}).items()]
  if rows:
    common.print_table("overheads", rows, ("quantity", "value"))


def main(argv: list[str] | None = None) -> dict:
  return run(parse_args(argv))


if __name__ == "__main__":
  main()
