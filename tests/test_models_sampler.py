"""The SaliencySampler layer, the saliency network and the blur warm-up.

The layer is checked end to end against tests/references/torch_models.SaliencySampler, a PyTorch
implementation of the authors' published numerics (adaptive average
pooling, truncated ResNet + ReLU + 1x1 head, bilinear upsampling, softmax, replicate padding,
Gaussian correlations, clamp, grid upsampling, F.grid_sample with align_corners=True), with the
same weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from torch.nn import functional as F

from tests.references import torch_models
from saliency_jax import models
from saliency_jax import ops
from saliency_jax.models import baselines
from saliency_jax.models import blur
from saliency_jax.models import convert
from saliency_jax.models import resnet
from saliency_jax.models import saliency_network
from saliency_jax.models import sampler as sampler_lib
from saliency_jax.models import task as task_lib

TASK = 64
CONFIG = {"name": "saliency_sampler", "task_net": "resnet_tiny", "task_size": TASK,
          "low_res_size": 48, "saliency_backbone": "resnet_tiny", "saliency_depth": 14,
          "grid_size": 31, "padding": 30, "fwhm": 13.0, "temperature": 0.7}
# Micro networks for the tests that compile gradients or several variants.
MICRO_TASK = resnet.ResNetSpec("basic", (1, 1), width=4)
MICRO_BACKBONE = resnet.ResNetSpec("basic", (1,), width=4)
MICRO_TASK_SIZE = 32


def _rngs(seed=0):
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _randomise_batch_norm(torch_model, seed):
  generator = torch.Generator().manual_seed(seed)
  for module in torch_model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      n = module.num_features
      module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
      module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
  return torch_model


@pytest.fixture(scope="module")
def paired():
  """The JAX model and the PyTorch reference with the same weights, both in eval mode."""
  torch.manual_seed(0)
  task_torch = _randomise_batch_norm(torch_models.resnet("resnet_tiny", num_classes=5), 1)
  backbone_torch = _randomise_batch_norm(torch_models.resnet("resnet_tiny"), 2)
  reference = torch_models.SaliencySampler(
      task_torch, torch_models.truncated_resnet(backbone_torch, 3), 32, task_size=TASK,
      low_res_size=48, grid_size=31, padding=30, fwhm=13.0, temperature=0.7).eval()
  with torch.no_grad():
    # A strong head, so that the saliency map is far from uniform and the grid warps visibly.
    reference.saliency_head.weight.mul_(20.0)

  model = models.build_model(CONFIG, num_outputs=5, rngs=_rngs())
  convert.load_torchvision(model.task_net, {k: v.numpy() for k, v in
                                            task_torch.state_dict().items()})
  convert.load_resnet(model.saliency_net.backbone,
                      {k: v.numpy() for k, v in backbone_torch.state_dict().items()},
                      load_fc=False)
  head = reference.saliency_head
  model.saliency_net.head.kernel.set_value(
      jnp.asarray(head.weight.detach().numpy().transpose(2, 3, 1, 0)))
  model.saliency_net.head.bias.set_value(jnp.asarray(head.bias.detach().numpy()))
  model.eval()
  return model, reference


@pytest.fixture(scope="module")
def images():
  # Rectangular, larger than the task size; smooth enough that the sampled values vary gently.
  rng = np.random.default_rng(0)
  coarse = rng.integers(0, 256, (2, 12, 10, 3)).astype(np.float32)
  smooth = jax.image.resize(coarse, (2, 120, 100, 3), "linear")
  return jnp.asarray(np.clip(np.round(smooth), 0, 255), jnp.uint8)


@pytest.fixture(scope="module")
def micro():
  """A SaliencySampler with micro networks (grid 8, padding 7), in eval mode.

  It samples with align_corners=False: with True the border samples sit exactly on pixel
  centres, where bilinear sampling has a kink, and a finite difference there averages the two
  one-sided slopes that the gradient (like PyTorch's) picks one of.
  """
  rngs = _rngs(1)
  saliency_net = saliency_network.SaliencyNetwork(backbone=MICRO_BACKBONE, depth=6, grid_size=8,
                                                  rngs=rngs)
  task_net = resnet.ResNet(MICRO_TASK, num_classes=5, rngs=rngs)
  model = models.SaliencySampler(task_net, saliency_net, task_size=MICRO_TASK_SIZE,
                                 low_res_size=32, padding=7, fwhm=4.0, align_corners=False)
  model.eval()
  return model


_forward = nnx.jit(lambda model, x, key=None: model(x, blur_key=key))


def test_sampler_matches_the_pytorch_reference(paired, images):
  model, reference = paired
  outputs, extras = _forward(model, images)
  x = torch.from_numpy(np.asarray(images, np.float32).transpose(0, 3, 1, 2) / 255.0)
  with torch.no_grad():
    ref_outputs, ref_sampled, ref_grid, ref_saliency = reference(x)
  # The map is far from uniform and the grid is far from the identity: a real test of the warp.
  assert float(ref_saliency.max() / ref_saliency.min()) > 10
  assert extras["saliency"].shape == (2, 31, 31)
  np.testing.assert_allclose(extras["saliency"], ref_saliency.numpy(), rtol=1e-4, atol=1e-7)
  assert extras["grid"].shape == (2, TASK, TASK, 2)
  # The grid is a ratio of sums of the map, which agrees to 1e-4 relative: the grid's
  # coordinates (in [-1, 1]) agree to 1e-4 absolute (2.5e-5 seen on an AMD EPYC CPU).
  np.testing.assert_allclose(extras["grid"], ref_grid.numpy(), atol=1e-4)
  assert extras["sampled"].shape == (2, TASK, TASK, 3)
  # Bilinear samples move with the grid by the image's slope: at most 0.1 of the value range per
  # pixel (the image is smooth), 60 pixels per unit of the grid, so 1e-4 of grid error moves a
  # sample by up to 6e-4 (1.2e-4 seen on the AMD EPYC CPU).
  np.testing.assert_allclose(extras["sampled"], ref_sampled.numpy().transpose(0, 2, 3, 1),
                             atol=5e-4)
  assert outputs.shape == (2, 5) and outputs.dtype == jnp.float32
  np.testing.assert_allclose(outputs, ref_outputs.numpy(), atol=1e-4, rtol=1e-4)


def test_float_input_in_unit_range_equals_uint8_input(paired, images):
  model, _ = paired
  from_uint8, _ = _forward(model, images)
  from_float, extras = _forward(model, images.astype(jnp.float32) / 255.0)
  np.testing.assert_allclose(from_float, from_uint8, atol=1e-4, rtol=1e-4)
  assert 0.0 <= float(extras["sampled"].min()) and float(extras["sampled"].max()) <= 1.0


def test_sampler_under_a_batch_sharded_over_8_devices(micro, images):
  model = micro
  assert len(jax.devices()) == 8
  batch = jnp.concatenate([images] * 4)  # 8 images, one per device.
  expected, expected_extras = _forward(model, batch)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  graphdef, state = nnx.split(model)
  state = jax.device_put(state, NamedSharding(mesh, P()))

  @jax.jit
  def forward(state, x):
    return nnx.merge(graphdef, state)(x)

  outputs, extras = forward(state, sharded)
  assert outputs.sharding.is_equivalent_to(NamedSharding(mesh, P("data")), 2)
  np.testing.assert_allclose(outputs, expected, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(extras["grid"], expected_extras["grid"], atol=1e-5)


def _loss(model, images, labels):
  outputs, _ = model(images)
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(outputs), labels[:, None], axis=1))


def test_gradients_reach_the_saliency_network(micro, images):
  model = micro
  labels = jnp.array([1, 3])
  loss, grads = nnx.jit(nnx.value_and_grad(_loss))(model, images, labels)
  saliency_grads = grads["saliency_net"]
  backbone = saliency_grads["backbone"]
  for leaf in jax.tree.leaves(saliency_grads):
    assert np.all(np.isfinite(leaf))
  assert float(jnp.abs(backbone["conv1"]["kernel"][...]).max()) > 0
  assert float(jnp.abs(backbone["layer1"][0]["conv2"]["kernel"][...]).max()) > 0
  head_kernel = saliency_grads["head"]["kernel"][...]
  assert float(jnp.abs(head_kernel).max()) > 0
  # The softmax ignores a constant shift, so the head's bias has no gradient at all.
  assert float(jnp.abs(saliency_grads["head"]["bias"][...]).max()) < 1e-6 * float(
      jnp.abs(head_kernel).max())

  # The head kernel's gradient agrees with a central finite difference along it.
  direction = head_kernel / jnp.linalg.norm(head_kernel)
  kernel = model.saliency_net.head.kernel.get_value()
  eps = 2e-4
  losses = []
  for sign in (1.0, -1.0):
    model.saliency_net.head.kernel.set_value(kernel + sign * eps * direction)
    losses.append(float(nnx.jit(_loss)(model, images, labels)))
  model.saliency_net.head.kernel.set_value(kernel)
  numeric = (losses[0] - losses[1]) / (2 * eps)
  analytic = float(jnp.sum(head_kernel * direction))
  np.testing.assert_allclose(numeric, analytic, rtol=1e-2)
  assert float(loss) > 0


def test_blur_matches_pytorch_pool_then_upsample():
  rng = np.random.default_rng(0)
  x = rng.random((4, 40, 40, 3)).astype(np.float32)
  sizes = np.array([40, 13, 1, 27])
  out = jax.jit(blur.blur)(jnp.asarray(x), jnp.asarray(sizes))
  for b, s in enumerate(sizes):
    image = torch.from_numpy(x[b:b + 1].transpose(0, 3, 1, 2))
    expected = F.interpolate(F.adaptive_avg_pool2d(image, int(s)), size=(40, 40),
                             mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out[b], expected[0].numpy().transpose(1, 2, 0), atol=1e-5)
  np.testing.assert_allclose(out[0], x[0], atol=1e-6)  # Size 40 of 40 is the identity.


def test_blur_warm_up_is_reproducible_from_its_key(micro, images):
  model = micro
  _, plain = _forward(model, images)
  _, first = _forward(model, images, jax.random.key(7))
  _, again = _forward(model, images, jax.random.key(7))
  _, other = _forward(model, images, jax.random.key(8))
  np.testing.assert_array_equal(first["sampled"], again["sampled"])
  assert not np.array_equal(first["sampled"], other["sampled"])
  # Each example is the unblurred sample blurred at one size in [blur_min, task size], where
  # blur_min is the authors' 64 at 224 scaled to 32 pixels: round(64 * 32 / 224) = 9.
  assert model.blur_min == 9
  candidates = np.arange(1, MICRO_TASK_SIZE + 1)
  for b in range(images.shape[0]):
    stack = jnp.repeat(plain["sampled"][b:b + 1], len(candidates), axis=0)
    blurred = np.asarray(jax.jit(blur.blur)(stack, jnp.asarray(candidates)))
    errors = np.abs(blurred - np.asarray(first["sampled"][b])).max(axis=(1, 2, 3))
    size = candidates[np.argmin(errors)]
    assert errors.min() < 1e-5 and 9 <= size <= MICRO_TASK_SIZE


def test_saliency_network_depths_and_shapes():
  for depth, (channels, stride) in {6: (64, 4), 10: (128, 8), 14: (256, 16)}.items():
    net = nnx.eval_shape(lambda depth=depth: saliency_network.SaliencyNetwork(
        backbone="resnet18", depth=depth, grid_size=31, rngs=nnx.Rngs(0)))
    assert net.backbone.num_features == channels
    features, _ = jax.eval_shape(lambda n, x: n.backbone(x), net,
                                 jax.ShapeDtypeStruct((2, 224, 192, 3), jnp.float32))
    assert features.shape == (2, 224 // stride, 192 // stride, channels)
    out = jax.eval_shape(lambda n, x: n(x), net,
                         jax.ShapeDtypeStruct((2, 224, 192, 3), jnp.float32))
    assert out.shape == (2, 31, 31, 1)
  with pytest.raises(ValueError, match=r"saliency depth must be one of \(6, 10, 14\).*got 12"):
    saliency_network.SaliencyNetwork(depth=12, rngs=_rngs())
  with pytest.raises(ValueError, match=r"saliency backbone must be one of.*got 'resnet50'"):
    saliency_network.SaliencyNetwork(backbone="resnet50", rngs=_rngs())


def test_bad_inputs_and_configs_raise_clear_errors(micro):
  model = micro
  with pytest.raises(ValueError, match="at least the task size, 32x32 pixels; got 31x100"):
    model(jnp.zeros((1, 31, 100, 3), jnp.uint8))
  with pytest.raises(ValueError, match=r"shape \[batch, height, width, 3\]; got shape"):
    model(jnp.zeros((1, 80, 80, 1), jnp.uint8))
  with pytest.raises(ValueError, match="uint8 .* or floating .*; got dtype int32"):
    model(jnp.zeros((1, 80, 80, 3), jnp.int32))
  bad = [({"task_net": "resnet152"}, r"model_config.task_net: expected one of .*'resnet152'"),
         ({"name": "zoom"}, r"model_config.name: expected one of .*'zoom'"),
         ({"saliency_backbone": "vgg"}, r"model_config.saliency_backbone: .*'vgg'"),
         ({"saliency_depth": 18}, r"model_config.saliency_depth: expected one of \(6, 10, 14\)"),
         ({"grid_size": 1}, r"model_config.grid_size: expected an int >= 2; got 1"),
         ({"temperature": 0.0}, r"model_config.temperature: expected a finite number > 0"),
         ({"output_activation": "tanh"}, r"model_config.output_activation: .*'tanh'"),
         ({"zoom": 2}, r"model_config.zoom: unknown field 'zoom'"),
         ({"task_net": "alexnet", "task_size": 48},
          r"task_size: expected an int >= 63 .*alexnet.*; got 48"),
         # What ConfigDict's types leave to the schema: None, and a bool for a number.
         ({"task_size": None}, r"model_config.task_size: expected int; got None"),
         ({"fwhm": True}, r"model_config.fwhm: expected float; got True"),
         ({"grid_size": 9.5}, r"model_config.grid_size: expected int; got 9.5"),
         ({"max_magnification": 0.5},
          r"model_config.max_magnification: expected 0 \(no cap\) or a finite number >= 1"),
         ({"saliency_head_init": "ones"}, r"model_config.saliency_head_init: .*'ones'"),
         ({"task_head_init": "ones"}, r"model_config.task_head_init: .*'ones'")]
  for override, message in bad:
    with pytest.raises(ValueError, match=message):
      models.build_model({**CONFIG, **override}, num_outputs=5, rngs=_rngs())


@pytest.mark.parametrize("task_net,size", [("resnet_tiny", 32), ("alexnet", 63),
                                           ("inception_v3", 75)])
def test_zero_task_head_starts_every_class_at_chance(task_net, size):
  """"zero" zeroes the classifier only: logits exactly 0 for every image (so the loss starts at
  log(classes)), while the torch head's logits vary and both share every other parameter."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, size, size, 3)), jnp.float32)
  nets = {init: models.build_task_net(task_net, num_outputs=5, head_init=init, rngs=_rngs())
          for init in ("torch", "zero")}
  for net in nets.values():
    net.eval()
  np.testing.assert_array_equal(nets["zero"](x)[0], np.zeros((2, 5)))
  assert float(jnp.std(nets["torch"](x)[0])) > 1e-3
  torch_params, zero_params = (nnx.to_flat_state(nnx.state(n, nnx.Param)) for n in nets.values())
  differing = {path[:-1] for (path, a), (_, b) in zip(torch_params, zero_params)
               if not np.array_equal(a[...], b[...])}
  assert differing == {("fc8",) if task_net == "alexnet" else ("fc",)}
  with pytest.raises(ValueError, match="head_init must be one of"):
    models.build_task_net(task_net, num_outputs=5, head_init="ones", rngs=_rngs())
  if task_net == "resnet_tiny":  # build_model passes the field to every model's task network.
    for name in ("saliency_sampler", "uniform"):
      model = models.build_model({**CONFIG, "name": name, "task_head_init": "zero"},
                                 num_outputs=5, rngs=_rngs())
      assert not np.any(model.task_net.fc.kernel[...]) and not np.any(model.task_net.fc.bias[...])


def test_zero_head_starts_at_uniform_saliency(images):
  """"zero": the logits are 0, so the map is uniform and the grid is the one of a zero map."""
  model = models.build_model({**CONFIG, "saliency_head_init": "zero"}, num_outputs=5,
                             rngs=_rngs())
  model.eval()
  _, extras = _forward(model, images)
  g = CONFIG["grid_size"]
  np.testing.assert_allclose(extras["saliency"], np.full((len(images), g, g), 1 / g**2),
                             rtol=1e-6)
  # Expected: the ops' grid of that uniform map, and (to float32 rounding of the normalised
  # attraction: 1.3e-6 seen) the grid of an all-zero map, which the ops test against the identity.
  for saliency, atol in ((jnp.full((len(images), g, g), 1 / g**2), 1e-6),
                         (jnp.zeros((len(images), g, g)), 1e-5)):
    expected = ops.attraction_grid(saliency, (TASK, TASK), fwhm=CONFIG["fwhm"],
                                   padding=CONFIG["padding"])
    np.testing.assert_allclose(extras["grid"], expected, atol=atol)


def test_zero_head_with_the_recipe_starts_as_uniform_downsampling():
  """With `models.SAMPLER_RECIPE` (the exact identity, align_corners False, anti-aliased, the
  uniform view) the zero head's first view is the uniform baseline's input: the area average of
  each 2x2 block (`ops.area_resize`), to the uint8 pyramid's rounding (see
  tests/test_saliency_sample.py); so the task network reads the same image twice."""
  image = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 2 * TASK, 2 * TASK, 3)),
                      jnp.uint8)
  model = models.build_model({**CONFIG, **models.SAMPLER_RECIPE, "saliency_head_init": "zero"},
                             num_outputs=5, rngs=_rngs())
  model.eval()
  _, extras = _forward(model, image)
  np.testing.assert_allclose(extras["sampled"], ops.area_resize(image, (TASK, TASK)) / 255.0,
                             atol=0.6 / 255)
  # The pyramid's rounding moves the logits by 0.006 here; the authors' grid (align_corners
  # True, or without the exact identity) by 0.19 and 0.33.
  warped, uniform = extras["view_outputs"]
  np.testing.assert_allclose(warped, uniform, atol=0.02)


def test_detail_prior_with_a_zero_head_is_the_detail_map(images):
  """With the detail prior the map is the product of the network's and `ops.detail_saliency`'s;
  a zero head leaves the prior alone, which the ops test against NumPy variances."""
  model = models.build_model({**CONFIG, "saliency_head_init": "zero", "detail_prior": True},
                             num_outputs=5, rngs=_rngs())
  model.eval()
  _, extras = _forward(model, images)
  g = CONFIG["grid_size"]
  prior = ops.detail_saliency(images, (TASK, TASK), (g, g)) / CONFIG["temperature"]
  np.testing.assert_allclose(extras["saliency"], jax.nn.softmax(prior.reshape(len(images), -1),
                                                                axis=-1).reshape(prior.shape),
                             rtol=1e-5)
  assert float(jnp.max(extras["saliency"])) > 2 / g**2  # Not the uniform map.
  with pytest.raises(ValueError, match="detail_prior"):
    models.build_model({**CONFIG, "name": "stn_affine", "detail_prior": True}, num_outputs=5,
                       rngs=_rngs())


def test_exploration_bump_in_training_only(images):
  """Training mode adds, per example, a Gaussian bump of height `explore` (standard deviation
  `EXPLORE_WIDTH` cells, written out here) on a cell drawn from the map; eval mode adds none."""
  g = CONFIG["grid_size"]
  model = models.build_model({**CONFIG, "saliency_head_init": "zero", "explore": 4.0},
                             num_outputs=5, rngs=_rngs())
  rows, cols = np.indices((g, g))

  def bump(i, j):
    return 4.0 * np.exp(-((rows - i) ** 2 + (cols - j) ** 2) / (2 * sampler_lib.EXPLORE_WIDTH**2))

  model.eval()
  np.testing.assert_array_equal(model.saliency_logits(images), 0.0)
  model.train()
  draws = [np.asarray(model.saliency_logits(images)) for _ in range(3)]
  for view in draws:
    for example in view:
      np.testing.assert_allclose(example, bump(*np.unravel_index(np.argmax(example), (g, g))),
                                 rtol=1e-5, atol=1e-6)
  # The stream advances: three draws of two examples are not all on one cell.
  assert len({np.argmax(example) for view in draws for example in view}) > 1
  # Cells are drawn from the map: a map that is all on one cell puts every bump there.
  corner = jnp.zeros((g, g)).at[3, 5].set(60.0)
  model.saliency_net = lambda view: jnp.broadcast_to(corner[None, :, :, None],
                                                     (view.shape[0], g, g, 1))
  for example in np.asarray(model.saliency_logits(images)):
    assert np.unravel_index(np.argmax(example - np.asarray(corner)), (g, g)) == (3, 5)
  model.eval()
  np.testing.assert_array_equal(model.saliency_logits(images), np.broadcast_to(
      corner, (len(images), g, g)))
  with pytest.raises(ValueError, match="explore"):
    models.build_model({**CONFIG, "name": "stn_affine", "explore": 1.0}, num_outputs=5,
                       rngs=_rngs())
  with pytest.raises(ValueError, match="explore"):
    models.build_model({**CONFIG, "explore": -1.0}, num_outputs=5, rngs=_rngs())


def test_glimpses_pool_the_views_in_training_and_one_view_in_eval(images):
  """Training: K views, each bumped at a drawn cell; the outputs are the log of the views' mean
  class probabilities; each cell's log probability is the map's. Eval: the single view."""
  k = 3
  model = models.build_model({**CONFIG, "explore": 4.0, "glimpses": k}, num_outputs=5,
                             rngs=_rngs())
  model.train()
  outputs, extras = model(images)
  views = np.asarray(extras["glimpse_outputs"])
  assert views.shape == (k, len(images), 5) and outputs.shape == (len(images), 5)
  log_softmax = np.asarray(jax.nn.log_softmax(views, axis=-1), np.float64)
  np.testing.assert_allclose(outputs, np.log(np.exp(log_softmax).mean(0)), rtol=1e-5, atol=1e-5)
  assert extras["sampled"].shape == (len(images), TASK, TASK, 3)
  # Each view's log probability is the map's log softmax (logits / temperature) at some cell.
  logits = np.asarray(model._map_logits(images)[0], np.float64).reshape(len(images), -1)
  log_map = logits / CONFIG["temperature"]
  log_map -= np.log(np.exp(log_map - log_map.max(1, keepdims=True)).sum(1, keepdims=True)) + (
      log_map.max(1, keepdims=True))
  for view in np.asarray(extras["glimpse_log_prob"]):
    for example, value in enumerate(view):
      assert np.min(np.abs(log_map[example] - value)) < 1e-4
  model.eval()
  single, extras = model(images)
  assert single.shape == (len(images), 5) and "glimpse_outputs" not in extras
  with pytest.raises(ValueError, match="glimpses"):
    models.build_model({**CONFIG, "glimpses": 2}, num_outputs=5, rngs=_rngs())


def test_magnification_cap_and_antialias_reach_the_ops(images):
  """The layer's sample equals `ops.saliency_sample` given the same options and its logits."""
  config = {**CONFIG, "max_magnification": 2.0, "antialias": True, "temperature": 0.05}
  model = models.build_model(config, num_outputs=5, rngs=_rngs())
  model.eval()
  _, extras = _forward(model, images)
  logits = model.saliency_logits(images)
  sampled, grid, _ = ops.saliency_sample(
      images, logits, (TASK, TASK), temperature=0.05, fwhm=CONFIG["fwhm"],
      padding=CONFIG["padding"], antialias=True, max_magnification=2.0)
  np.testing.assert_allclose(extras["grid"], grid, atol=1e-5)  # jit vs eager rounding
  np.testing.assert_allclose(extras["sampled"], sampled / 255.0, atol=1e-5)
  assert float(ops.magnification(grid, None)[:, 1:-1, 1:-1].max()) <= 2.0 + 1e-3
  # Without the cap this temperature magnifies well beyond it (else the check above is empty).
  uncapped = ops.attraction_grid(ops.softmax_saliency(logits, temperature=0.05), (TASK, TASK),
                                 fwhm=CONFIG["fwhm"], padding=CONFIG["padding"])
  assert float(ops.magnification(uncapped, None)[:, 1:-1, 1:-1].max()) > 2.5


def test_the_source_cap_reaches_the_ops_and_needs_no_other_cap(images):
  model = models.build_model({**CONFIG, "cap_at_source": True, "temperature": 0.05},
                             num_outputs=5, rngs=_rngs())
  model.eval()
  _, extras = _forward(model, images)
  _, grid, _ = ops.saliency_sample(
      images, model.saliency_logits(images), (TASK, TASK), temperature=0.05,
      fwhm=CONFIG["fwhm"], padding=CONFIG["padding"], max_magnification="source")
  np.testing.assert_allclose(extras["grid"], grid, atol=1e-5)  # jit vs eager rounding
  # At most one output pixel per source pixel (the ops' own measure; tests/test_magnification.py
  # checks it against numpy.gradient).
  source = images.shape[1:3]
  assert float(ops.magnification(grid, source)[:, 1:-1, 1:-1].max()) <= 1.0 + 1e-3
  uncapped = ops.saliency_sample(images, model.saliency_logits(images), (TASK, TASK),
                                 temperature=0.05, fwhm=CONFIG["fwhm"],
                                 padding=CONFIG["padding"])[1]
  assert float(ops.magnification(uncapped, source)[:, 1:-1, 1:-1].max()) > 1.2
  for override, message in (({"max_magnification": 2.0}, "cap_at_source"),
                            ({"name": "stn_affine"}, "cap_at_source")):
    with pytest.raises(ValueError, match=message):
      models.build_model({**CONFIG, "cap_at_source": True, **override}, num_outputs=5,
                         rngs=_rngs())


def test_saliency_cost_charges_the_networks_map_in_training_only(images):
  """"penalty" is `saliency_cost` times the KL divergence from uniform (written here in NumPy)
  of the saliency network's own map, before the detail prior; none in eval mode; a zero head
  costs nothing; the cost's gradient reaches the saliency network."""
  config = {**CONFIG, "saliency_cost": 0.5, "detail_prior": True, "temperature": 0.7}
  model = models.build_model(config, num_outputs=5, rngs=_rngs())
  model.train()
  _, extras = model(images)
  view = task_lib.area_view(images, CONFIG["low_res_size"])
  own = np.asarray(model.saliency_net(task_lib.imagenet_normalize(view))[..., 0], np.float64)
  flat = own.reshape(len(images), -1) / 0.7
  p = np.exp(flat - flat.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  expected = 0.5 * (np.sum(p * np.log(p), axis=1) + np.log(flat.shape[1]))
  assert expected.min() > 1e-3  # The authors' random head: a non-uniform map.
  np.testing.assert_allclose(extras["penalty"], expected, rtol=1e-4, atol=1e-6)

  grads = nnx.grad(lambda m: jnp.sum(m._map_logits(images)[1]["penalty"]))(model)
  assert float(optax.global_norm(grads["saliency_net"])) > 0
  model.eval()
  assert "penalty" not in model(images)[1]
  zero = models.build_model({**config, "saliency_head_init": "zero"}, num_outputs=5,
                            rngs=_rngs())
  zero.train()
  np.testing.assert_allclose(zero(images)[1]["penalty"], 0.0, atol=1e-5)
  for bad, message in (({"saliency_cost": -0.1}, "saliency_cost"),
                       ({"name": "stn_affine", "saliency_cost": 0.1}, "saliency_cost")):
    with pytest.raises(ValueError, match=message):
      models.build_model({**CONFIG, **bad}, num_outputs=5, rngs=_rngs())


def test_dead_zone_soft_thresholds_the_logits_with_a_straight_through_gradient(images):
  """Forward: the network's logits minus their mean over the grid, soft-thresholded by
  `dead_zone` (NumPy below); backward: the gradient of the logits as if unthresholded."""
  plain = models.build_model(CONFIG, num_outputs=5, rngs=_rngs())
  zoned = models.build_model({**CONFIG, "dead_zone": 0.01}, num_outputs=5, rngs=_rngs())
  for model in (plain, zoned):
    model.eval()
  raw = np.asarray(plain._map_logits(images)[0], np.float64)
  centred = raw - raw.mean(axis=(1, 2), keepdims=True)
  expected = np.sign(centred) * np.maximum(np.abs(centred) - 0.01, 0.0)
  assert (expected == 0).any() and (expected != 0).any()  # Both sides of the zone occur.
  np.testing.assert_allclose(zoned._map_logits(images)[0], expected, atol=1e-6)
  weights = jnp.asarray(np.random.default_rng(0).normal(size=raw.shape[1:]), jnp.float32)

  def through(model):
    return nnx.grad(lambda m: jnp.sum(m._map_logits(images)[0] * weights))(model)

  centred_weights = weights - jnp.mean(weights)  # The mean's removal, in the plain gradient.
  plain_grads = nnx.grad(lambda m: jnp.sum(m._map_logits(images)[0] * centred_weights))(plain)
  zoned_grads = through(zoned)
  for a, b in zip(jax.tree.leaves(nnx.state(plain_grads, nnx.Param)),
                  jax.tree.leaves(nnx.state(zoned_grads, nnx.Param))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # A zero head: a flat map, whatever the zone.
  zero = models.build_model({**CONFIG, "dead_zone": 0.5, "saliency_head_init": "zero"},
                            num_outputs=5, rngs=_rngs())
  np.testing.assert_array_equal(zero._map_logits(images)[0], 0.0)
  with pytest.raises(ValueError, match="dead_zone"):
    models.build_model({**CONFIG, "name": "uniform", "dead_zone": 1.0}, num_outputs=5,
                       rngs=_rngs())


def test_uniform_view_pools_the_warped_and_the_uniform_views(images):
  """The outputs are the log of the mean of the two views' class probabilities (NumPy below);
  the warped view's outputs are the plain layer's, the uniform view's are `UniformSampler`'s
  with the same task network; the warp's gradient reaches the saliency network."""
  plain = models.build_model(CONFIG, num_outputs=5, rngs=_rngs())
  pooled = models.build_model({**CONFIG, "uniform_view": "pooled"}, num_outputs=5,
                              rngs=_rngs())
  uniform = baselines.UniformSampler(pooled.task_net, task_size=TASK)
  for model in (plain, pooled, uniform):
    model.eval()
  outputs, extras = pooled(images)
  views = np.asarray(extras["view_outputs"], np.float64)
  assert views.shape == (2, len(images), 5) and extras["sampled"].shape == (len(images), TASK,
                                                                             TASK, 3)
  np.testing.assert_allclose(views[0], plain(images)[0], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(views[1], uniform(images)[0], rtol=1e-4, atol=1e-4)
  probabilities = np.exp(views - views.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  np.testing.assert_allclose(outputs, np.log(probabilities.mean(0)), rtol=1e-4, atol=1e-4)

  pooled.train()
  assert "view_outputs" not in pooled(images)[1]  # Trained on the pooled outputs.
  grads = nnx.grad(lambda m: jnp.sum(m(images)[0][:, 0]))(pooled)
  assert float(optax.global_norm(nnx.state(grads["saliency_net"], nnx.Param))) > 0
  each = models.build_model({**CONFIG, "uniform_view": "each"}, num_outputs=5, rngs=_rngs())
  each.train()
  assert each(images)[1]["view_outputs"].shape == (2, len(images), 5)  # For the train step.
  assert "view_weights" not in each(images)[1]  # The train step sums the views' losses.
  mean = models.build_model({**CONFIG, "uniform_view": "mean"}, num_outputs=5, rngs=_rngs())
  mean.train()
  _, extras = mean(images)
  assert extras["view_outputs"].shape == (2, len(images), 5)
  np.testing.assert_array_equal(extras["view_weights"], [0.5, 0.5])
  for bad in ({"glimpses": 2, "explore": 1.0}, {"output_activation": "sigmoid"},
              {"name": "uniform"}, {"uniform_view": "both"}):
    with pytest.raises(ValueError, match="uniform_view"):
      models.build_model({**CONFIG, "uniform_view": "pooled", **bad}, num_outputs=5,
                         rngs=_rngs())



def _score(net, view):
  """The evidence's score: the predicted class's logit less the mean logit, summed."""
  logits = net(task_lib.imagenet_normalize(view))[0]
  top = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
  return jnp.sum(logits[jnp.arange(len(view)), top] - logits.mean(-1))


def _pooled_evidence(net, view, g):
  """`[B, g, g]` the area-pooled magnitude of the score's gradient in `view` (`nnx.grad` of a
  clone, so that the model's own network and batch statistics are left as they are)."""
  gradient = jax.grad(lambda v: _score(nnx.clone(net), v))(jnp.asarray(view))
  return np.asarray(ops.area_resize(jnp.sum(jnp.abs(gradient), -1)[..., None], (g, g)))[..., 0]


def _density(evidence, g):
  return 0.9 * evidence / evidence.sum((1, 2), keepdims=True) + 0.1 / g**2


def test_saliency_supervision_charges_the_maps_distance_from_the_input_gradient(images):
  """In training, "penalty" is the weight times the confidence (the predicted class's
  probability rescaled from [1/K, 1] to [0, 1]) times KL(target || map), the target the
  area-pooled magnitude of the input gradient of the predicted class's logit less the mean logit
  in the warped view (here by `nnx.grad` of a clone and one central difference), unwarped to the
  map's cells by `ops.unwarp` (tested on its own) and mixed 9:1 with the uniform density; it
  trains the saliency network, not the task network, and leaves the task network's batch
  statistics as the plain forward pass leaves them."""
  weight = 0.5
  model = models.build_model({**CONFIG, "uniform_view": "mean", "saliency_supervision": weight},
                             num_outputs=5, rngs=_rngs())
  plain = models.build_model({**CONFIG, "uniform_view": "mean"}, num_outputs=5, rngs=_rngs())
  for m in (model, plain):
    m.train()
  _, extras = model(images)
  plain(images)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               nnx.state(model.task_net, nnx.BatchStat), nnx.state(plain.task_net, nnx.BatchStat))
  view = np.asarray(extras["sampled"], np.float32)  # The warped view.
  assert float(ops.saliency_information(extras["saliency"]).min()) > 0.01  # Not the identity.

  clone = nnx.clone(model.task_net)
  logits = np.asarray(nnx.clone(clone)(task_lib.imagenet_normalize(jnp.asarray(view)))[0],
                      np.float64)
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  confidence = (probabilities.max(-1) - 1 / 5) / (1 - 1 / 5)
  gradient = np.asarray(jax.grad(lambda v: _score(nnx.clone(clone), v))(jnp.asarray(view)))
  eps = 1e-2
  bump = np.zeros_like(view)
  bump[1, 20, 30, 0] = eps
  difference = (_score(nnx.clone(clone), jnp.asarray(view + bump))
                - _score(nnx.clone(clone), jnp.asarray(view - bump))) / (2 * eps)
  np.testing.assert_allclose(difference, gradient[1, 20, 30, 0], rtol=0.05, atol=1e-3)
  g = extras["saliency"].shape[1]
  pooled = _pooled_evidence(clone, view, g)
  unwarped = ops.unwarp(jnp.asarray(pooled[..., None]), extras["grid"], (g, g),
                        source_shape=images.shape[1:3], padding_mode="border")[0][..., 0]
  target = _density(np.asarray(unwarped, np.float64), g)
  saliency = np.asarray(extras["saliency"], np.float64)
  divergence = np.sum(target * (np.log(target) - np.log(saliency)), axis=(1, 2))
  expected = weight * confidence * divergence
  np.testing.assert_allclose(extras["penalty"], expected, rtol=1e-3, atol=1e-6)
  assert float(np.min(divergence)) > 0.01 and float(np.min(confidence)) > 0

  grads = nnx.grad(lambda m: jnp.sum(m(images)[1]["penalty"]))(model)
  assert float(optax.global_norm(nnx.state(grads["task_net"], nnx.Param))) == 0
  assert float(optax.global_norm(nnx.state(grads["saliency_net"], nnx.Param))) > 0
  model.eval()
  assert "penalty" not in model(images)[1]
  for bad in ({"glimpses": 2, "explore": 1.0}, {"output_activation": "sigmoid"},
              {"name": "uniform"}):
    with pytest.raises(ValueError, match="saliency_supervision"):
      models.build_model({**CONFIG, "saliency_supervision": 1.0, **bad}, num_outputs=5,
                         rngs=_rngs())
  with pytest.raises(ValueError, match="saliency_supervision"):
    sampler_lib.SaliencySampler(model.task_net, model.saliency_net, saliency_supervision=-1.0)


def test_without_the_warps_gradient_the_map_learns_from_the_evidence_alone(images):
  """`warp_gradient=False`: the same outputs and penalty as the paper's layer (same parameters);
  the task's loss gives the saliency network no gradient and the task network the same one,
  while the penalty's gradient on the saliency network is the paper's layer's (its target has
  none in either)."""
  fields = {**CONFIG, **models.SAMPLER_RECIPE, "saliency_supervision": 1.0}
  paper = models.build_model({**fields, "warp_gradient": True}, num_outputs=5, rngs=_rngs())
  cut = models.build_model({**fields, "warp_gradient": False}, num_outputs=5, rngs=_rngs())
  labels = jnp.arange(len(images)) % 5

  def grads(model, part):
    def loss(m):
      outputs, extras = m(images)
      if part == "task":
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(outputs, labels))
      return jnp.sum(extras["penalty"])
    return nnx.state(nnx.grad(loss)(model), nnx.Param)

  for m in (paper, cut):
    m.train()
  (out_p, ext_p), (out_c, ext_c) = paper(images), cut(images)
  np.testing.assert_allclose(out_c, out_p, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ext_c["penalty"], ext_p["penalty"], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ext_c["saliency"], ext_p["saliency"], rtol=1e-6)
  task_p, task_c = grads(paper, "task"), grads(cut, "task")
  assert float(optax.global_norm(task_p["saliency_net"])) > 0
  assert float(optax.global_norm(task_c["saliency_net"])) == 0
  # Tolerances: float32 rounding of differently fused programs (5e-6 on gradients of order 1).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
               task_c["task_net"], task_p["task_net"])
  penalty_p, penalty_c = grads(paper, "penalty"), grads(cut, "penalty")
  assert float(optax.global_norm(penalty_c["saliency_net"])) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6),
               penalty_c["saliency_net"], penalty_p["saliency_net"])
  with pytest.raises(ValueError, match="warp_gradient"):
    models.build_model({**CONFIG, "warp_gradient": False}, num_outputs=5, rngs=_rngs())
  with pytest.raises(ValueError, match="warp_gradient=False needs saliency_supervision"):
    sampler_lib.SaliencySampler(paper.task_net, paper.saliency_net, warp_gradient=False)


def test_evidence_at_the_identity_grid_is_the_uniform_views(images):
  """With a zero saliency head (a uniform map) and the exact identity, the grid is the identity
  and the evidence is the view's own pooled evidence (no unwarp involved in the reference), to
  float32 rounding: the unwarp reads the align_corners=False grid in its own convention."""
  model = models.build_model({**CONFIG, **models.SAMPLER_RECIPE, "saliency_head_init": "zero",
                              "saliency_supervision": 1.0}, num_outputs=5, rngs=_rngs())
  model.train()
  _, extras = model(images)
  np.testing.assert_allclose(extras["saliency"], 1 / 31**2, rtol=1e-6)
  g = extras["saliency"].shape[1]
  target, _ = model.evidence_map(extras["sampled"], extras["grid"], images.shape[1:3], (g, g))
  view = np.asarray(extras["sampled"], np.float32)
  expected = _density(_pooled_evidence(model.task_net, view, g).astype(np.float64), g)
  np.testing.assert_allclose(target, expected, rtol=1e-4)
  assert float(ops.saliency_information(jnp.asarray(expected)).min()) > 0.05  # Not flat.
