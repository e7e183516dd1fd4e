"""Ending an XLA:CPU fusion: write an array out once instead of recomputing it in its consumers.

XLA:CPU fuses cheap elementwise producers into every consumer. Where a value feeds several
consumers, or one that rereads each element many times (the sampler reads every grid value once
per channel and tap), that recomputes the producer each time: the sampler's forward measured ~1.7x
slower with its grid's upsampling fused into it.
`jax.lax.optimization_barrier` does not prevent this (XLA:CPU removes it before fusing), but XLA
does not fuse a gather into a consumer that rereads its elements: an identity gather of whole
rows (a plain copy loop, into which the producer fuses) ends the fusion.
"""

import jax
import jax.numpy as jnp


@jax.custom_jvp
def materialised(x: jax.Array) -> jax.Array:
  """`x [B, h, ...]` (any dtype), unchanged, written out by a loop of its own.

  Batched over the leading axis, so that a batch-sharded array stays sharded, and in the array's
  own layout. The gradient is the identity's (differentiating the gather would transpose it into
  a scatter-add).
  """
  b, h = x.shape[:2]
  rows = jax.lax.broadcasted_iota(jnp.int32, (b, h, 1), 1)
  dims = jax.lax.GatherDimensionNumbers(
      offset_dims=(2,), collapsed_slice_dims=(1,), start_index_map=(1,),
      operand_batching_dims=(0,), start_indices_batching_dims=(0,))
  flat = x.reshape(b, h, -1)
  out = jax.lax.gather(flat, rows, dims, slice_sizes=(1, 1, flat.shape[-1]),
                       mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)
  return out.reshape(x.shape)


@materialised.defjvp
def _materialised_jvp(primals, tangents):
  return materialised(primals[0]), tangents[0]
