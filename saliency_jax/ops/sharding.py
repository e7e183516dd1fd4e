"""The ops on arrays with explicit shardings (`jax.make_mesh`'s default axis type).

Every op of this package is independent per image, and their fast paths merge the batch axis
with others (a flat pixel index, matrix products over `[B C, H, W]` planes), which JAX refuses
for an array whose type says its batch axis is sharded. `batch_parallel` runs such an op with
`shard_map` over the axes that shard the batch, so each device computes its own images with
the plain code and nothing crosses devices. Any other sharded axis (an image split over its
rows, say) is first gathered, as the sampler's data-dependent reads need the whole image; with
automatic sharding (`jax.sharding.Mesh`'s default, or no mesh) this module does nothing and XLA
partitions the ops itself.
"""
from collections.abc import Callable
import functools

import jax
from jax.sharding import PartitionSpec as P

try:
  _shard_map = jax.shard_map
  _CHECK = "check_vma"
except AttributeError:  # jax < 0.7
  from jax.experimental.shard_map import shard_map as _shard_map
  _CHECK = "check_rep"


def _explicit_spec(x) -> P | None:
  """The explicit `PartitionSpec` in `x`'s type, or None (automatic sharding, or older JAX)."""
  typeof = getattr(jax, "typeof", None)
  if typeof is None:
    return None
  sharding = getattr(typeof(x), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec is None or all(axis is None for axis in spec):
    return None
  return spec


def batch_parallel(fn: Callable[..., object], *, check: bool = True) -> Callable[..., object]:
  """`fn(*arrays)` (each with the batch as leading axis, as is every output) per batch shard.

  `check=False` for an `fn` whose outputs carry no record of how they vary over the devices
  (a `pallas_call`): `shard_map`'s check of it is then off.
  """

  @functools.wraps(fn)
  def wrapper(*arrays):
    spec = next((s for s in map(_explicit_spec, arrays) if s is not None), None)
    if spec is None:
      return fn(*arrays)
    batch = spec[0] if len(spec) else None
    layout = P(batch)
    mesh = next(jax.typeof(a).sharding.mesh for a in arrays if _explicit_spec(a) is not None)
    arrays = tuple(a if _explicit_spec(a) == layout else
                   jax.sharding.reshard(a, jax.sharding.NamedSharding(mesh, layout))
                   for a in arrays)
    if batch is None:
      return fn(*arrays)
    return _shard_map(fn, mesh=mesh, in_specs=layout, out_specs=layout,
                      **({} if check else {_CHECK: False}))(*arrays)

  return wrapper
