"""Grain input pipelines that deliver global, sharded uint8 batches.

The whole pipeline is a `grain.MapDataset`, i.e. a pure function from a batch index to a batch:

    train: record order = a fresh permutation of the split per epoch (seeded by `seed` and the
           epoch), global position p -> record -> decode -> random-resized crop + flip drawn from
           a generator seeded by (seed, p); host h of H takes the h-th contiguous block of
           `global_batch_size / H` positions of each global batch, which are the rows of the
           global batch on its devices.
    eval:  positions 0 .. N-1 in order, then padding examples (mask False) up to a whole number
           of global batches, repeated pass after pass.

Because batch `k` is a function of `(seed, k)` only, the iterator state is just the index of the
next batch: it is tiny, JSON-serialisable, and a restored loader yields exactly the batches an
uninterrupted one would, whatever `num_workers` and `prefetch` are, before and after. (Global
batch `k` does not depend on the number of hosts either, nor does which device gets which
of its examples: N processes of D devices each train on exactly what one process of N x D
devices trains on.) So the loader keeps this index rather than grain's own iterator checkpoints
(or orbax's grain handler), whose state describes the worker processes and cannot be restored
with another `num_workers` or process count.

The batches are computed ahead in background worker processes (`num_workers > 0`, grain's
`mp_prefetch`) or threads of this process (`num_workers == 0`), and each host's part is placed
on its devices as one global `jax.Array` per field with `jax.make_array_from_process_local_data`,
sharded along the batch axis over every axis of the mesh ("data", and "fsdp" if there is one).
The next batch is already on its way to the devices while the current one is used.

Unreadable images never stop an epoch: in training the next record of the dataset takes the
place of the bad one (so every training mask is True); in evaluation the example is masked out.
Both are logged in the worker with the record's index and counted in `Loader.num_skipped`.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from typing import Any, Iterator

import grain
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from saliency_jax.data import config as config_lib
from saliency_jax.data import datasets
from saliency_jax.data import dense_records
from saliency_jax.data import transforms

_LOG = logging.getLogger("saliency_jax.data")
# Consecutive unreadable records after which the data, not one file, is broken.
_MAX_SUBSTITUTES = 32
# Global batches handed to the devices ahead of the one being used.
_DEVICE_AHEAD = 1
SPLITS = ("train", "eval")


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
  """Record index -> preprocessed example; runs in the input workers (no JAX here).

  Attributes:
    source: random-access records (see `datasets`).
    kind: "crop", "resize" or "dense" (see `datasets.preprocessing`).
    size: high-resolution side delivered.
    resize: shorter side before the evaluation centre crop.
    min_crop_area: smallest area fraction of the training crop.
    hflip: whether training flips horizontally.
    task: "classification", "regression" or "dense".
    num_classes: object classes (dense tasks: the range of the mask and labels).
    num_boxes: rows of a dense record's boxes.
  """

  source: Any
  kind: str
  size: int
  resize: int
  min_crop_area: float
  hflip: bool
  task: str
  num_classes: int = 0
  num_boxes: int = 0

  def _targets(self, record: dict[str, Any], index: int) -> dict[str, np.ndarray]:
    if self.task == "classification":
      return {"label": np.int32(record["label"])}
    if self.task == "regression":
      return {"label": np.asarray(record["label"], np.float32).reshape(2)}
    return dense_records.targets(record, size=self.size, num_classes=self.num_classes,
                                 index=index)

  def _padding(self, skipped: int) -> dict[str, np.ndarray]:
    if self.task == "dense":
      targets = dense_records.padding(self.num_boxes, size=self.size)
    else:
      targets = {"label": np.int32(0) if self.task == "classification" else np.zeros(2, np.float32)}
    return {"image": np.zeros((self.size, self.size, 3), np.uint8), **targets,
            "mask": np.bool_(False), "skipped": np.int32(skipped), **self._groups({})}

  def _groups(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
    # Gaze evaluation batches say which examples come from a tablet: the paper reports the
    # error on phones and on tablets separately.
    if self.task != "regression":
      return {}
    return {"tablet": np.bool_(record.get("tablet", False))}

  def _decode(self, record: dict[str, Any], rng: np.random.Generator | None
              ) -> tuple[np.ndarray, dict[str, Any]]:
    """The preprocessed image and the record its targets come from."""
    if self.kind == "dense":  # Masks and boxes follow the image's resize and flip.
      record = transforms.dense_transform(record, size=self.size, rng=rng, flip=self.hflip)
      return record["image"], record
    return self._image(record["image"], rng), record

  def _image(self, data: Any, rng: np.random.Generator | None) -> np.ndarray:
    if self.kind == "resize":
      return transforms.resize_transform(data, size=self.size)
    if rng is None:
      return transforms.eval_transform(data, size=self.size, resize=self.resize)
    return transforms.train_transform(data, rng, size=self.size,
                                      scale=(self.min_crop_area, 1.0), flip=self.hflip)

  def train(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The training example of `record_index`, or of the next readable record after it."""
    count = len(self.source)
    for attempt in range(_MAX_SUBSTITUTES):
      index = (int(record_index) + attempt) % count
      try:
        image, record = self._decode(self.source[index], rng)
      except transforms.BadImageError as error:
        _LOG.warning("Skipping unreadable training record %d: %s", index, error)
        continue
      return {"image": image, **self._targets(record, index), "mask": np.bool_(True),
              "skipped": np.int32(attempt)}
    raise RuntimeError(
        f"{_MAX_SUBSTITUTES} consecutive records from index {record_index} cannot be decoded "
        f"(see the warnings above): the dataset itself looks broken. Prepare it again.")

  def eval(self, position: int) -> dict[str, np.ndarray]:
    """The evaluation example at `position`; padding (mask False) past the end of the split."""
    if position >= len(self.source):
      return self._padding(skipped=0)
    try:
      image, record = self._decode(self.source[int(position)], None)
    except transforms.BadImageError as error:
      _LOG.warning("Masking out unreadable evaluation record %d: %s", position, error)
      return self._padding(skipped=1)
    return {"image": image, **self._targets(record, int(position)), "mask": np.bool_(True),
            "skipped": np.int32(0), **self._groups(record)}


def _seeds(seed: int) -> tuple[int, int]:
  """Independent 32-bit seeds for the shuffle and the augmentation."""
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative int; got {seed!r}.")
  order, augment = np.random.SeedSequence(int(seed)).generate_state(2)
  return int(order), int(augment)


def host_batches(examples: Examples, *, split: str, global_batch_size: int, seed: int,
                 process_index: int, process_count: int) -> grain.MapDataset:
  """This host's batches as an infinite `grain.MapDataset` (batch k = element k).

  Returns:
    Elements are dicts of NumPy arrays with leading dimension
    `global_batch_size // process_count`: "image" uint8 `[b, S, S, 3]`, "label" (dense tasks:
    `dense_records.FIELDS` instead), "mask" bool, "skipped" int32 (unreadable records replaced
    or masked in this example); regression (gaze) evaluation batches add "tablet" bool (the
    recording's device).
  """
  count = len(examples.source)
  if split == "train":
    order_seed, augment_seed = _seeds(seed)
    positions = grain.MapDataset.range(count).shuffle(seed=order_seed).repeat(None)
    elements = positions.random_map(examples.train, seed=augment_seed)
  else:
    total = math.ceil(count / global_batch_size) * global_batch_size
    elements = grain.MapDataset.range(total).map(examples.eval).repeat(None)
  # Host h takes rows h * b .. (h + 1) * b - 1 of each global batch (b = per_host): the rows
  # that `make_array_from_process_local_data` places on its devices of the process-major mesh,
  # so every device sees the same examples as in a one-process run on the same number of devices.
  per_host = global_batch_size // process_count
  return elements.batch(per_host, drop_remainder=True)[process_index::process_count]


def _allow_grain_workers() -> None:
  # grain reads its absl flags when it starts worker processes; outside an absl app (tests,
  # notebooks, scripts) they are unparsed, and reading them would raise.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class Loader:
  """Iterates global batches; see `make_loader`.

  Iterating yields dicts of global `jax.Array`s sharded along the batch axis over every mesh
  axis: "image" uint8 `[B, S, S, 3]`, "label" int32 `[B]` or float32 `[B, 2]` (dense tasks:
  "segmentation" uint8 `[B, S, S]`, "boxes" float32 `[B, M, 4]`, "labels" int32 `[B, M]` and
  "small" bool `[B, M]`, see `dense_records`), "mask" bool `[B]`. A training loader is infinite. An evaluation loader yields one pass (`len(loader)`
  batches) per `iter()`; a pass that is abandoned early restarts from the beginning next time.
  """

  def __init__(self, batches: grain.MapDataset, *, split: str, global_batch_size: int,
               mesh: Mesh, seed: int, num_workers: int, prefetch: int, num_examples: int,
               task: str):
    self._batches = batches
    self.split = split
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.num_examples = num_examples
    self.task = task
    self._num_workers = num_workers
    self._prefetch = prefetch
    self._sharding = NamedSharding(mesh, batch_spec(mesh))
    self._batches_per_pass = math.ceil(num_examples / global_batch_size)
    self._step = 0  # Absolute index of the next batch handed out.
    self._fetched = 0  # Absolute index of the next batch the grain iterator produces.
    self._iterator = None
    self._ready: collections.deque[tuple[dict[str, jax.Array], int]] = collections.deque()
    self.num_skipped = 0

  def __len__(self) -> int:
    """Batches per evaluation pass (evaluation loaders only)."""
    if self.split != "eval":
      raise TypeError("a training loader is infinite; see steps_per_epoch.")
    return self._batches_per_pass

  @property
  def steps_per_epoch(self) -> int:
    """Whole global batches per pass over the split (at least 1)."""
    return max(1, self.num_examples // self.global_batch_size)

  def get_state(self) -> dict[str, Any]:
    """The position of the loader: a small JSON-serialisable dict."""
    step = self._step % self._batches_per_pass if self.split == "eval" else self._step
    return {"split": self.split, "step": int(step), "seed": int(self.seed),
            "global_batch_size": int(self.global_batch_size)}

  def set_state(self, state: dict[str, Any]) -> None:
    """Moves to a position from `get_state` (of a loader with the same split, seed, batch).

    Raises:
      ValueError: if the state is malformed or comes from a different loader.
    """
    try:
      split, step = state["split"], int(state["step"])
      seed, batch = int(state["seed"]), int(state["global_batch_size"])
    except (KeyError, TypeError, ValueError) as error:
      raise ValueError(f"state must be a dict from Loader.get_state(); got {state!r}.") from error
    mine = (self.split, self.seed, self.global_batch_size)
    if (split, seed, batch) != mine or step < 0:
      raise ValueError(f"state {state!r} belongs to another loader (this one: split={mine[0]!r}, "
                       f"seed={mine[1]}, global_batch_size={mine[2]}).")
    self._step = step

  def _restart(self) -> None:
    self.close()
    read = grain.ReadOptions(num_threads=1 if self._num_workers else self._prefetch,
                             prefetch_buffer_size=self._prefetch)
    dataset = self._batches[self._step:].to_iter_dataset(read)
    if self._num_workers:
      _allow_grain_workers()
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self._num_workers, per_worker_buffer_size=self._prefetch))
    self._iterator = iter(dataset)
    self._fetched = self._step

  def _to_global(self, local: np.ndarray) -> jax.Array:
    shape = (self.global_batch_size,) + local.shape[1:]
    return jax.make_array_from_process_local_data(self._sharding, local, shape)

  def _fetch(self) -> tuple[dict[str, jax.Array], int]:
    host = next(self._iterator)
    self._fetched += 1
    skipped = int(np.sum(host.pop("skipped")))
    return {key: self._to_global(value) for key, value in host.items()}, skipped

  def _next_batch(self) -> dict[str, jax.Array]:
    if self._iterator is None or self._fetched - len(self._ready) != self._step:
      self._restart()
    while len(self._ready) <= _DEVICE_AHEAD:
      self._ready.append(self._fetch())
    batch, skipped = self._ready.popleft()
    if skipped:
      self.num_skipped += skipped
      _LOG.warning("%d unreadable image(s) in %s batch %d (%d so far on this host).", skipped,
                   self.split, self._step, self.num_skipped)
    self._step += 1
    return batch

  def _train_batches(self) -> Iterator[dict[str, jax.Array]]:
    while True:
      yield self._next_batch()

  def _eval_batches(self) -> Iterator[dict[str, jax.Array]]:
    try:
      while True:
        yield self._next_batch()
        if self._step % self._batches_per_pass == 0:
          return
    finally:
      # Abandoned mid-pass: the next pass starts from its beginning (same batches, next cycle).
      self._step += -self._step % self._batches_per_pass

  def __iter__(self) -> Iterator[dict[str, jax.Array]]:
    return self._train_batches() if self.split == "train" else self._eval_batches()

  def close(self) -> None:
    """Stops the background workers (a later iteration starts them again)."""
    if self._iterator is not None and hasattr(self._iterator, "close"):
      self._iterator.close()
    self._iterator = None
    self._ready.clear()

  def __enter__(self) -> Loader:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def batch_spec(mesh: Mesh) -> PartitionSpec:
  """Batches are split over every axis of the mesh (data parallel, and FSDP's axis if any)."""
  axes = tuple(mesh.axis_names)
  return PartitionSpec(axes[0] if len(axes) == 1 else axes)


def _host_block(mesh: Mesh) -> int:
  """Which contiguous block of every global batch this process's devices hold.

  `make_array_from_process_local_data` gives this process's rows to its devices in their mesh
  order, so the process must load exactly those rows: the devices' block of the "data" axis.
  """
  devices = list(np.asarray(mesh.devices).reshape(-1))
  mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
  per_host = len(devices) // jax.process_count()
  if (len(mine) != per_host or mine[0] % per_host
      or mine != list(range(mine[0], mine[0] + per_host))):
    raise ValueError(f"mesh must hold each process's devices as one contiguous block (in "
                     f"row-major order, e.g. sorted by process, as saliency_jax.train.make_mesh "
                     f"does); process {jax.process_index()} has positions {mine} of "
                     f"{len(devices)}.")
  return mine[0] // per_host


def make_loader(data_config: Any, *, split: str, global_batch_size: int, mesh: Mesh,
                seed: int) -> Loader:
  """Builds the input pipeline of one split.

  Args:
    data_config: a data config (`ConfigDict` or dict; see `default_data_config`).
    split: "train" (infinite, reshuffled every epoch, augmented) or "eval" (one deterministic
      pass per iteration, evaluation preprocessing, the last batch padded with mask False).
    global_batch_size: examples per batch over all hosts; each host contributes
      `global_batch_size // jax.process_count()`.
    mesh: the device mesh; batches are split over all of its axes (in row-major order).
    seed: seed of the training order and augmentation (ignored in evaluation).

  Returns:
    A `Loader`.

  Raises:
    ValueError: for a bad config, split, seed, mesh or batch size.
    FileNotFoundError: if the data is missing or unprepared (the message says what to do).
  """
  cfg = config_lib.parse_data_config(data_config)
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
  block = _host_block(mesh)
  hosts, data_size = jax.process_count(), mesh.size
  if (not isinstance(global_batch_size, (int, np.integer)) or isinstance(global_batch_size, bool)
      or global_batch_size < 1):
    raise ValueError(f"global_batch_size must be a positive int; got {global_batch_size!r}.")
  global_batch_size = int(global_batch_size)
  for name, divisor in (("jax.process_count()", hosts), ("the mesh's devices", data_size)):
    if global_batch_size % divisor:
      raise ValueError(f"global_batch_size ({global_batch_size}) must be divisible by {name} "
                       f"({divisor}); try {max(divisor, global_batch_size // divisor * divisor)}.")
  _seeds(seed)
  source = datasets.make_source(cfg, split)
  if not len(source):
    raise FileNotFoundError(f"data: the {split} split of {cfg['name']!r} "
                            f"({datasets.split_name(cfg, split)!r}) has no examples.")
  task = config_lib.DATASET_TASKS[cfg["name"]]
  size = cfg["image_size"] if split == "train" else cfg["eval_image_size"]
  dense = {}
  if task == "dense":
    dense = {"num_classes": source.num_classes,
             "num_boxes": int(np.shape(source[0]["labels"])[0])}
  examples = Examples(source=source, kind=datasets.preprocessing(cfg), size=size,
                      resize=cfg["eval_resize"], min_crop_area=cfg["min_crop_area"],
                      hflip=cfg["hflip"], task=task, **dense)
  if split == "train":
    # A split that cannot be decoded at all fails here, before the trainer writes anything,
    # rather than inside an input worker at the first step.
    try:
      examples.train(0, np.random.default_rng(0))
    except RuntimeError as error:
      raise ValueError(f"data: the {split} split of {cfg['name']!r} cannot be read: "
                       f"{error}") from None
  batches = host_batches(examples, split=split, global_batch_size=global_batch_size, seed=seed,
                         process_index=block, process_count=hosts)
  return Loader(batches, split=split, global_batch_size=global_batch_size, mesh=mesh, seed=seed,
                num_workers=cfg["num_workers"], prefetch=cfg["prefetch"],
                num_examples=len(source), task=task)
