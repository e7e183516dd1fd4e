"""Comparing training states that two device layouts computed from the same start."""
import jax
import numpy as np


def assert_layouts_agree(got, want, *, leaf_rtol: float, norm_rtol: float, name: str = ""):
  """`got` equals `want` leaf by leaf up to the rounding of sums taken in another order.

  Cross-device sums add in another order, so each leaf agrees to `leaf_rtol` of its own largest
  value and the whole tree to `norm_rtol` of its norm. Leaves whose gradient vanishes in exact
  arithmetic (the saliency head's bias: the softmax ignores a constant shift of the logits) hold
  rounding noise only, which a floor of 1e-6 of the tree's largest value absorbs (with the demo's
  magnification cap that bias's momentum held 9.36e-6 on one device and 9.49e-6 on eight). A
  missing or wrong all-reduce or gather is off by O(1).
  """
  got = [np.asarray(x) for x in jax.tree.leaves(got)]
  want = [np.asarray(x) for x in jax.tree.leaves(want)]
  assert len(got) == len(want), name
  floor = 1e-6 * max(float(np.abs(b).max()) for b in want)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=0, atol=leaf_rtol * np.abs(b).max() + floor + 1e-7,
                               err_msg=name)
  difference = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(got, want)))
  assert difference <= norm_rtol * np.sqrt(sum(np.sum(b ** 2) for b in want)), name
