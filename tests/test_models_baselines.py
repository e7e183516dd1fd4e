"""The paper's baselines: geometry against PyTorch / hand-derived values, and training.

References (the transformers' grids themselves: tests/test_parametric.py): the identity grid's
plain sampling for the transformers at their start; `torch.nn.functional.conv2d` and a NumPy loop
implementation of DCN v1 sampling for the deformable
convolution; exact pixel crops for the CAM crop, and copies of its task network for its
BatchNorm statistics.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from torch.nn import functional as F

from saliency_jax import models
from saliency_jax import ops
from saliency_jax.models import baselines
from saliency_jax.models import deformable
from saliency_jax.models import resnet
from saliency_jax.models import saliency_network
from saliency_jax.models import task


def _rngs(seed=0):
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 256, shape), jnp.uint8)


def _numpy_deformable_conv(x, kernel, offsets, stride, padding):
  """DCN v1 by loops: every tap read bilinearly at its regular position plus its offset."""
  b, h, w, c = x.shape
  kh, kw, _, out = kernel.shape
  _, ho, wo, _ = offsets.shape
  result = np.zeros((b, ho, wo, out))

  def read(n, r, q):
    if 0 <= r < h and 0 <= q < w:
      return x[n, r, q]
    return np.zeros(c)

  for n in range(b):
    for i in range(ho):
      for j in range(wo):
        for u in range(kh):
          for v in range(kw):
            k = u * kw + v
            r = i * stride - padding + u + offsets[n, i, j, 2 * k]
            q = j * stride - padding + v + offsets[n, i, j, 2 * k + 1]
            r0, q0 = int(np.floor(r)), int(np.floor(q))
            fr, fq = r - r0, q - q0
            value = ((1 - fr) * (1 - fq) * read(n, r0, q0) + (1 - fr) * fq * read(n, r0, q0 + 1)
                     + fr * (1 - fq) * read(n, r0 + 1, q0) + fr * fq * read(n, r0 + 1, q0 + 1))
            result[n, i, j] += value @ kernel[u, v]
  return result


@pytest.mark.parametrize("stride", [1, 2])
def test_deformable_conv_zero_offsets_equal_the_plain_convolution(stride):
  layer = deformable.DeformableConv(5, 7, 3, stride=stride, padding=1, use_bias=True,
                                    rngs=_rngs())
  layer.bias.set_value(jnp.arange(7, dtype=jnp.float32))
  x = np.random.default_rng(0).standard_normal((2, 9, 8, 5)).astype(np.float32)
  expected = F.conv2d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                      torch.from_numpy(np.array(layer.kernel[...]).transpose(3, 2, 0, 1)),
                      torch.arange(7, dtype=torch.float32), stride=stride, padding=1)
  out = layer(jnp.asarray(x))
  np.testing.assert_allclose(out, expected.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_deformable_conv_with_offsets_matches_a_loop_reference():
  layer = deformable.DeformableConv(3, 4, 3, stride=2, padding=1, rngs=_rngs())
  rng = np.random.default_rng(1)
  layer.offset.bias.set_value(jnp.asarray(rng.uniform(-2.5, 2.5, 18), jnp.float32))
  layer.offset.kernel.set_value(jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 18)), jnp.float32))
  x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
  offsets = np.asarray(layer.offset(jnp.asarray(x)))
  expected = _numpy_deformable_conv(x, np.asarray(layer.kernel[...]), offsets, 2, 1)
  np.testing.assert_allclose(layer(jnp.asarray(x)), expected, atol=1e-4)
  # The offsets are learned: the output depends on them through the bilinear weights.
  grads = nnx.grad(lambda conv: jnp.sum(conv(jnp.asarray(x)) ** 2))(layer)
  assert float(jnp.abs(grads["offset"]["kernel"][...]).max()) > 0


def test_deformable_baseline_replaces_the_last_three_3x3_convolutions():
  net = nnx.eval_shape(lambda: resnet.build_resnet("resnet18", deformable_convs=3,
                                                   rngs=nnx.Rngs(0)))
  kinds = [(stage, i, name, type(getattr(block, name)).__name__)
           for stage in resnet.STAGES for i, block in enumerate(getattr(net, stage))
           for name in ("conv1", "conv2")]
  deformable_convs = [k[:3] for k in kinds if k[3] == "DeformableConv"]
  assert deformable_convs == [("layer4", 0, "conv2"), ("layer4", 1, "conv1"),
                              ("layer4", 1, "conv2")]
  bottleneck = nnx.eval_shape(lambda: resnet.build_resnet("resnet50", deformable_convs=3,
                                                          rngs=nnx.Rngs(0)))
  assert all(isinstance(block.conv2, deformable.DeformableConv) for block in bottleneck.layer4)
  assert not isinstance(bottleneck.layer3[-1].conv2, deformable.DeformableConv)
  alexnet = nnx.eval_shape(lambda: models.AlexNet(deformable_convs=3, rngs=nnx.Rngs(0)))
  assert [type(getattr(alexnet, f"conv{i}")).__name__ for i in range(1, 6)] == [
      "Conv", "Conv", "DeformableConv", "DeformableConv", "DeformableConv"]


# Micro networks keep the compiled programs small: two one-block stages of width 4 for the task
# network (four 3x3 convolutions, so three can be deformable), one stage for localisation.
TASK_SPEC = resnet.ResNetSpec("basic", (1, 1), width=4)
LOCALISATION_SPEC = resnet.ResNetSpec("basic", (1,), width=4)
GRID = {"grid_size": 8, "padding": 7, "fwhm": 4.0}


def _micro_model(name, *, task_size=32, num_outputs=3, align_corners=True, crop_fraction=0.5):
  """The model `name` of `models.MODEL_NAMES` with micro networks."""
  rngs = _rngs()
  task_net = resnet.ResNet(TASK_SPEC, num_classes=num_outputs,
                           deformable_convs=3 if name == "deformable" else 0, rngs=rngs)
  warping = {"task_size": task_size, "low_res_size": 32, "align_corners": align_corners}
  local = {"backbone": LOCALISATION_SPEC, "depth": 6, "rngs": rngs}
  if name == "saliency_sampler":
    net = saliency_network.SaliencyNetwork(grid_size=GRID["grid_size"], **local)
    return models.SaliencySampler(task_net, net, fwhm=GRID["fwhm"], padding=GRID["padding"],
                                  **warping)
  if name in ("uniform", "deformable"):
    return models.UniformSampler(task_net, task_size=task_size)
  if name == "stn_affine":
    return models.STNAffine(task_net, baselines.affine_localisation(**local), **warping)
  if name == "stn_tps":
    return models.STNThinPlateSpline(
        task_net, baselines.tps_localisation(points_per_side=4, **local), **warping)
  if name == "grid_estimator":
    return models.GridEstimator(
        task_net, baselines.grid_localisation(grid_size=GRID["grid_size"], **local), **warping)
  assert name == "cam_crop"
  return models.CAMCrop(task_net, task_size=task_size, align_corners=align_corners,
                        crop_fraction=crop_fraction)


_forward = nnx.jit(lambda model, images: model(images))


def test_transformers_and_grid_estimator_start_at_the_identity():
  # Their heads start with a zero kernel, so whatever the features, the localisation network's
  # first prediction is the head's bias; the transforms of that prediction are checked here
  # (the full forward passes run in the training test below).
  images = _images((2, 48, 40, 3))
  identity = ops.affine_grid(jnp.tile(jnp.eye(2, 3)[None], (2, 1, 1)), (32, 32),
                             align_corners=True)
  for name in ("stn_affine", "stn_tps", "grid_estimator"):
    model = _micro_model(name)
    head = model.localisation_net.head
    assert float(jnp.abs(head.kernel[...]).max()) == 0, name
    if name == "grid_estimator":
      prediction = jnp.broadcast_to(head.bias[...], (2, 8, 8, 2))
    else:
      prediction = jnp.broadcast_to(head.bias[...], (2, head.bias.shape[0]))
    grid, _ = model.transform(prediction)
    if name == "grid_estimator":
      # The grid of a uniform saliency map: the sampler's starting point.
      expected = ops.attraction_grid(jnp.ones((2, 8, 8)), (32, 32), fwhm=4.0, padding=7)
    else:
      # The identity affine grid: plain bilinear point sampling of the image.
      expected = identity
    np.testing.assert_allclose(grid, expected, atol=1e-5, err_msg=name)
  sampled = ops.grid_sample(images, identity, align_corners=True)
  np.testing.assert_allclose(sampled[:, ::31, ::31], images[:, ::47, ::39], atol=1e-4)


def test_cam_crop_cuts_the_window_around_the_activation_peak():
  # A CAM peaking in cell (0, 0) of 2x2: the window (half the side) sits in the top-left corner,
  # which with align_corners=False samples exactly the pixels image[:32, :32] of a 64x64 image.
  cam = jnp.asarray([[[5.0, 1.0], [0.0, 2.0]], [[0.0, 1.0], [0.0, 9.0]]])
  images = _images((2, 64, 64, 3))
  model = _micro_model("cam_crop", align_corners=False, crop_fraction=0.5)
  model.eval()
  model.class_activation_map = lambda view: cam
  _, extras = model(images)
  np.testing.assert_allclose(extras["sampled"][0], images[0, :32, :32] / 255.0, atol=1e-6)
  np.testing.assert_allclose(extras["sampled"][1], images[1, 32:, 32:] / 255.0, atol=1e-6)
  np.testing.assert_array_equal(extras["cam"], cam)


def test_cam_is_the_predicted_class_weighting_of_the_last_feature_map():
  model = _micro_model("cam_crop", task_size=40, num_outputs=4)
  model.eval()
  view = jnp.asarray(np.random.default_rng(2).standard_normal((2, 40, 40, 3)), jnp.float32)
  logits, features = _forward(model.task_net, view)
  cam = nnx.jit(lambda m, v: m.class_activation_map(v))(model, view)
  assert cam.shape == (2, 5, 5)  # 40 pixels at stride 8.
  weights = np.asarray(model.task_net.fc.kernel[...])
  for b in range(2):
    predicted = int(np.argmax(logits[b]))
    expected = np.asarray(features["layer2"][b]) @ weights[:, predicted]
    np.testing.assert_allclose(cam[b], expected, atol=1e-5)
  # The crop position carries no gradient: only the second pass is trained.
  images = _images((2, 64, 64, 3))
  grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(images)[1]["grid"])))(model)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("jit", [False, True])
def test_cam_crop_updates_batch_norm_statistics_once_per_step(jit):
  # In training, the localisation pass runs as at inference: the CAM comes from the running
  # statistics, which only the second pass (on the crops) updates. References: copies of the
  # task network, one in eval mode on the uniform view, one in train mode on the crops alone.
  model = _micro_model("cam_crop", task_size=32, num_outputs=4)
  model.train()
  forward = nnx.jit(lambda m, x: m(x)) if jit else (lambda m, x: m(x))
  forward(model, _images((2, 64, 64, 3), seed=3))  # Running statistics away from their init.
  before = nnx.clone(model.task_net)
  images = _images((2, 64, 64, 3), seed=4)
  _, extras = forward(model, images)

  crops = nnx.clone(before)
  crops.train()
  crops(task.imagenet_normalize(extras["sampled"]))
  stats = jax.tree.leaves(nnx.state(model.task_net, nnx.BatchStat))
  expected_stats = jax.tree.leaves(nnx.state(crops, nnx.BatchStat))
  assert len(stats) == len(expected_stats) == 12  # Mean and variance of 6 BatchNorms.
  for value, expected in zip(stats, expected_stats):
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
  localisation = nnx.clone(before)
  localisation.eval()
  view = task.imagenet_normalize(task.area_view(images, 32))
  logits, features = localisation(view)
  weights = np.asarray(localisation.fc.kernel[...])
  for b in range(2):
    expected = np.asarray(features["layer2"][b]) @ weights[:, int(np.argmax(logits[b]))]
    np.testing.assert_allclose(extras["cam"][b], expected, rtol=1e-4, atol=1e-5)
  # The model is left in training mode.
  assert not any(layer.use_running_average for _, layer in nnx.iter_graph(model)
                 if isinstance(layer, nnx.BatchNorm))


# The models of labels (the dense zoom_unzoom trains on masks: tests/test_models_dense.py).
@pytest.mark.parametrize("name", [n for n in models.MODEL_NAMES if n != "zoom_unzoom"])
def test_a_few_optimizer_steps_lower_the_loss(name):
  model = _micro_model(name)
  images = _images((4, 48, 48, 3), seed=1)
  labels = jnp.array([0, 1, 2, 1])
  # The authors' per-group learning rates (1 / 0.01 / 0.001 of the base), with Adam.
  tx = optax.multi_transform({"task": optax.adam(1e-2), "saliency_head": optax.adam(1e-4),
                              "saliency_backbone": optax.adam(1e-5)}, models.param_labels)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, images, labels):
    def loss_fn(model):
      outputs, _ = model(images)
      return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  losses = [float(step(model, optimizer, images, labels)) for _ in range(20)]
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-3:]) < 0.5 * losses[0], np.round(losses, 3)
  # The loss could fall from the task network alone: the parts that decide where to look must
  # have received a gradient and moved too.
  after = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  labels = jax.tree.leaves(models.param_labels(before))
  moved = {jax.tree_util.keystr(path): (label, bool(np.any(np.asarray(a) != np.asarray(b))))
           for (path, b), a, label in zip(jax.tree_util.tree_flatten_with_path(before)[0],
                                          after, labels)}
  if name in ("saliency_sampler", "stn_affine", "stn_tps", "grid_estimator"):
    for group in ("saliency_head", "saliency_backbone"):
      assert any(changed for label, changed in moved.values() if label == group), (name, group)
  if name == "deformable":
    assert any(changed for path, (_, changed) in moved.items() if "offset" in path), name


def test_build_model_returns_each_model_with_its_networks():
  expected = {"saliency_sampler": models.SaliencySampler, "uniform": models.UniformSampler,
              "stn_affine": models.STNAffine, "stn_tps": models.STNThinPlateSpline,
              "grid_estimator": models.GridEstimator, "cam_crop": models.CAMCrop,
              "deformable": models.UniformSampler}
  for name, cls in expected.items():
    model = nnx.eval_shape(lambda name=name: models.build_model(
        {**TINY, "name": name}, num_outputs=3, rngs=nnx.Rngs(0)))
    assert type(model) is cls, name
    assert isinstance(model.task_net, resnet.ResNet)
    deformable_layers = [n for _, n in nnx.iter_graph(model)
                         if isinstance(n, deformable.DeformableConv)]
    assert len(deformable_layers) == (3 if name == "deformable" else 0), name
  gaze = nnx.eval_shape(lambda: models.build_model(
      {"name": "uniform", "task_net": "alexnet", "task_size": 227, "output_activation": "sigmoid"},
      num_outputs=2, rngs=nnx.Rngs(0)))
  assert isinstance(gaze.task_net, models.AlexNet) and gaze.output_activation == "sigmoid"
  outputs, extras = jax.eval_shape(lambda m, x: m(x), gaze,
                                   jax.ShapeDtypeStruct((1, 300, 280, 3), jnp.uint8))
  assert outputs.shape == (1, 2) and extras["sampled"].shape == (1, 227, 227, 3)


TINY = {"task_net": "resnet_tiny", "task_size": 32, "low_res_size": 32,
        "saliency_backbone": "resnet_tiny", "saliency_depth": 6, **GRID}


def test_param_labels_split_task_head_and_backbone():
  for name in ("saliency_sampler", "stn_affine", "grid_estimator", "uniform"):
    model = nnx.eval_shape(lambda name=name: models.build_model(
        {**TINY, "name": name}, num_outputs=3, rngs=nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    labels = models.param_labels(params)
    flat = {tuple(str(getattr(k, "key", k)) for k in path): label
            for path, label in jax.tree_util.tree_leaves_with_path(labels)}
    for path, label in flat.items():
      if path[0] in ("saliency_net", "localisation_net"):
        assert label == ("saliency_backbone" if path[1] == "backbone" else "saliency_head")
      else:
        assert path[0] == "task_net" and label == "task"
    if name != "uniform":
      assert set(flat.values()) == {"task", "saliency_head", "saliency_backbone"}
