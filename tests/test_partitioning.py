"""Fully sharded data parallelism: the ("data", "fsdp") mesh trains what data parallelism trains.

On the 8 CPU devices of tests/conftest.py: the same two train steps on a (8,) data-parallel
mesh and on a (2, 4) mesh whose "fsdp" axis splits the large arrays of the train state. The
reference is the data-parallel run (itself checked against one device in test_train.py).
"""
import jax
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from saliency_jax import train
from saliency_jax.train import partitioning
from tiny_experiments import load_config, synthetic_batch, tiny
from tree_checks import assert_layouts_agree


def _two_steps(config, mesh, host_batch):
  experiment = train.build_experiment(config, mesh=mesh, num_outputs=6, task="classification",
                                        total_steps=4, steps_per_epoch=4.0, blur_steps=2)
  batch = jax.device_put(host_batch, partitioning.batch_sharding(mesh))
  # Without the blur warm-up both times: one compilation of the step per mesh (the blur is a
  # per-example resize, unrelated to how the state is laid out).
  state, first = experiment.train_step(experiment.initial_state, batch, False)
  after_one = jax.device_get(state)  # The donated state's values, before the second step.
  state, second = experiment.train_step(state, batch, False)
  sums, _ = experiment.eval_step(state, batch)
  return experiment, state, after_one, (first, second, sums)


def test_fsdp_trains_what_data_parallelism_trains():
  config = tiny(load_config("default"))
  # The tiny ResNet's layer3 and layer4 kernels are large enough to split (8 arrays, and their
  # momenta); with ResNet-18 the test took 72 s on 2 cores, with this one 45 s.
  config.model.task_net = "resnet_tiny"
  # A small step: from scratch at the demo's rate, the second step's gradient already amplifies
  # the rounding of the first step's cross-device sums (one device and eight differ by 3e-3).
  config.optimizer.learning_rate = 1e-3
  # SGD: Adam divides each gradient by its own size, so the saliency head's bias, whose gradient
  # is zero but for rounding (the softmax ignores a constant added to every logit), takes a step
  # of the rate's size whose sign is the rounding's, which the two layouts round differently.
  config.optimizer.name = "sgd"
  host_batch = synthetic_batch(config)
  data_parallel = partitioning.make_mesh(jax.devices()[:8])
  fsdp = partitioning.make_mesh(jax.devices()[:8], fsdp=4)
  assert dict(fsdp.shape) == {"data": 2, "fsdp": 4}
  _, _, want_one, want_metrics = _two_steps(config, data_parallel, host_batch)
  experiment, state, after_one, metrics = _two_steps(config, fsdp, host_batch)

  # The layout: every large parameter and its momentum split in four along one axis.
  split = 0
  for tree in (state.params, state.opt_state):
    for leaf in jax.tree.leaves(tree):
      spec = leaf.sharding.spec
      if leaf.size >= partitioning.MIN_SHARDED_SIZE and any(d % 4 == 0 for d in leaf.shape):
        assert partitioning.FSDP_AXIS in spec, (leaf.shape, spec)
        axis = list(spec).index(partitioning.FSDP_AXIS)
        assert leaf.addressable_shards[0].data.shape[axis] == leaf.shape[axis] // 4
        split += 1
      else:
        assert spec == P() or all(s is None for s in spec), (leaf.shape, spec)
  assert split >= 16
  # The restore target carries the same layout, so a checkpoint resumes onto it.
  abstract = jax.tree.leaves(experiment.abstract_state().params)
  assert [a.sharding for a in abstract] == [x.sharding for x in jax.tree.leaves(state.params)]

  # The numbers: as data parallelism, to float32 rounding of the cross-device sums (the first
  # step from the same parameters to 1e-5; after an update, to 1e-3).
  for a, b, rtol in zip(metrics, want_metrics, (1e-5, 1e-3, 1e-3)):
    for name in a:
      np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=1e-5, err_msg=name)
  # The state after one step from the same parameters.
  for got, want in ((after_one.params, want_one.params), (after_one.opt_state, want_one.opt_state),
                    (after_one.model_state, want_one.model_state)):
    assert_layouts_agree(got, want, leaf_rtol=1e-3, norm_rtol=1e-5)


@pytest.mark.parametrize("shape,spec", [
    ((3, 3, 64, 128), P(None, None, None, "fsdp")),  # The largest axis that 4 divides.
    ((4096,), P("fsdp")),
    ((7, 7, 3, 63), P()),                             # No axis divisible by 4.
    ((64,), P()),                                     # Too small to be worth splitting.
    ((), P()),
])
def test_which_arrays_are_split(shape, spec):
  mesh = partitioning.make_mesh(jax.devices()[:8], fsdp=4)
  sharding = partitioning.state_shardings(jax.ShapeDtypeStruct(shape, np.float32), mesh)
  assert sharding.spec == spec


def test_fsdp_must_divide_the_devices():
  with pytest.raises(ValueError, match=r"fsdp_devices \(3\) must divide the number of devices"):
    partitioning.make_mesh(jax.devices()[:8], fsdp=3)
