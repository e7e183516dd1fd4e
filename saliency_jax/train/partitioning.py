"""How the train state and the batches are laid out over the devices.

The mesh has the axis "data" and, when `config.fsdp_devices > 1`, the axis "fsdp" of that size
(fully sharded data parallelism): every batch is split over both axes, so each device computes
on its own examples, and each large array of the train state (a parameter, or the optimizer's
moments of one) is split along one of its axes over "fsdp", so a device holds `1 / fsdp_devices`
of it; XLA gathers a parameter where a layer needs it and reduce-scatters its gradient. With
`fsdp_devices = 1` the state is replicated: plain data parallelism. Either way a step computes
the same numbers (to float rounding): the layout changes where arrays live, not what is computed.

Which arrays are split: those of at least `MIN_SHARDED_SIZE` elements, along their largest axis
that `fsdp_devices` divides (none if no axis does). The task network holds nearly all of them
(the saliency network is a few truncated stages); biases, normalisation scales and the step
counter stay replicated, where gathering would cost more than it saves.

The devices are ordered by process, so that each process's devices are one contiguous block of
the batch (see `saliency_jax.data.loader`).
"""
from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
MIN_SHARDED_SIZE = 2**12


def make_mesh(devices: list[jax.Device] | None = None, *, fsdp: int = 1) -> Mesh:
  """The ("data",) mesh, or ("data", "fsdp") with `fsdp` > 1, over `devices` (default: all)."""
  devices = jax.devices() if devices is None else list(devices)
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  if fsdp == 1:
    return Mesh(np.asarray(devices), (DATA_AXIS,))
  if len(devices) % fsdp:
    raise ValueError(f"fsdp_devices ({fsdp}) must divide the number of devices "
                     f"({len(devices)}).")
  return Mesh(np.asarray(devices).reshape(len(devices) // fsdp, fsdp), (DATA_AXIS, FSDP_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches: the leading axis split over every axis of the mesh."""
  axes = tuple(mesh.axis_names)
  return NamedSharding(mesh, P(axes[0] if len(axes) == 1 else axes))


def _spec(shape: tuple[int, ...], fsdp: int) -> P:
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_SIZE:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      return P(*([None] * axis + [FSDP_AXIS]))
  return P()


def state_shardings(state: Any, mesh: Mesh) -> Any:
  """A `NamedSharding` for every array of `state` (a pytree of arrays or shape structs)."""
  fsdp = mesh.shape.get(FSDP_AXIS, 1)
  return jax.tree.map(lambda x: NamedSharding(mesh, _spec(tuple(x.shape), fsdp)), state)
