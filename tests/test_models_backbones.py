"""Backbones: parameter counts, stage shapes, truncation, BatchNorm modes, AlexNet, Inception-v3.

Expected parameter counts are torchvision's, as listed in its model documentation
(https://pytorch.org/vision/stable/models.html, "num_params" of each weights enum), and are
cross-checked against the plain-PyTorch copies in tests/references/torch_models.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from tests.references import torch_models
from saliency_jax.models import alexnet
from saliency_jax.models import convert
from saliency_jax.models import inception
from saliency_jax.models import resnet


def _rngs(seed=0):
  # The "rbg" PRNG compiles much faster on CPU than the default threefry; tests only need keys.
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _num_params(model) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160)])
def test_resnet_parameter_count_equals_torchvision(name, expected):
  model = nnx.eval_shape(lambda: resnet.build_resnet(name, rngs=nnx.Rngs(0)))
  assert _num_params(model) == expected
  if name != "resnet101":  # Building the PyTorch copy of the largest one is slow; skip it.
    assert sum(p.numel() for p in torch_models.resnet(name).parameters()) == expected


@pytest.fixture(scope="module")
def abstract_inception():
  return nnx.eval_shape(lambda: inception.InceptionV3(aux_logits=True, rngs=nnx.Rngs(0)))


def test_alexnet_and_inception_parameter_counts_equal_torchvision(abstract_inception):
  assert _num_params(nnx.eval_shape(lambda: alexnet.AlexNet(rngs=nnx.Rngs(0)))) == 61_100_840
  model = abstract_inception
  assert _num_params(model) == 27_161_264
  # Without the auxiliary classifier torchvision's count is 23,834,568: 27,161,264 minus
  # conv0 (768 * 128 + BN 256), conv1 (128 * 768 * 25 + BN 1536) and fc (768 * 1000 + 1000).
  assert _num_params(model) - _num_params(model.AuxLogits) == 23_834_568
  assert _num_params(model.AuxLogits) == 3_326_696


def _torch_out(size, kernel, stride, padding):
  return (size + 2 * padding - kernel) // stride + 1


def test_resnet_stage_shapes_for_a_rectangular_input():
  model = nnx.eval_shape(lambda: resnet.build_resnet("resnet50", num_classes=10, rngs=nnx.Rngs(0)))
  x = jax.ShapeDtypeStruct((2, 97, 130, 3), jnp.float32)
  logits, features = jax.eval_shape(lambda m, x: m(x), model, x)
  # Spatial sizes by PyTorch's floor formula: 7x7/2 pad 3, max-pool 3/2 pad 1, then 3x3/2 pad 1.
  h, w = _torch_out(97, 7, 2, 3), _torch_out(130, 7, 2, 3)
  h, w = _torch_out(h, 3, 2, 1), _torch_out(w, 3, 2, 1)
  expected = {"stem": (2, h, w, 64), "layer1": (2, h, w, 256)}
  for stage, channels in (("layer2", 512), ("layer3", 1024), ("layer4", 2048)):
    h, w = _torch_out(h, 3, 2, 1), _torch_out(w, 3, 2, 1)
    expected[stage] = (2, h, w, channels)
  assert set(features) == {"stem", "layer1", "layer2", "layer3", "layer4", "pooled"}
  for stage, shape in expected.items():
    assert features[stage].shape == shape, stage
  assert features["pooled"].shape == (2, 2048)
  assert logits.shape == (2, 10)
  # The same shapes as the PyTorch network on the same input.
  with torch.no_grad():
    _, torch_features = torch_models.resnet("resnet_tiny").eval().forward_features(
        torch.zeros(1, 3, 97, 130))
  assert features["layer4"].shape[1:3] == tuple(torch_features["layer4"].shape[2:])


def test_truncated_resnet_builds_and_returns_only_the_kept_stages():
  model = nnx.eval_shape(
      lambda: resnet.build_resnet("resnet18", num_classes=None, num_stages=3, rngs=nnx.Rngs(0)))
  assert not hasattr(model, "layer4") and model.fc is None
  out, features = jax.eval_shape(lambda m, x: m(x), model,
                                 jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert out.shape == (1, 14, 14, 256)  # The authors' saliency features: stride 16, 256 channels.
  assert set(features) == {"stem", "layer1", "layer2", "layer3"}


def test_resnet_rejects_bad_arguments():
  with pytest.raises(ValueError, match="unknown ResNet 'resnet19'.*resnet18"):
    resnet.build_resnet("resnet19", rngs=_rngs())
  with pytest.raises(ValueError, match=r"num_stages must be in 1..4 \(at most 4\); got 5"):
    resnet.build_resnet("resnet_tiny", num_stages=5, num_classes=None, rngs=_rngs())
  with pytest.raises(ValueError, match="no classifier"):
    resnet.build_resnet("resnet_tiny", num_stages=2, num_classes=10, rngs=_rngs())


def _randomise_batch_norm(torch_model):
  generator = torch.Generator().manual_seed(1)
  for module in torch_model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      n = module.num_features
      module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
      module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
      module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
      module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)


def test_batch_norm_train_and_eval_modes_match_pytorch():
  torch.manual_seed(0)
  torch_model = torch_models.resnet("resnet_tiny", num_classes=5)
  _randomise_batch_norm(torch_model)
  model = nnx.eval_shape(lambda: resnet.build_resnet("resnet_tiny", num_classes=5,
                                                     rngs=nnx.Rngs(0)))
  convert.load_torchvision(model, {k: v.numpy() for k, v in torch_model.state_dict().items()})
  x = np.random.default_rng(0).standard_normal((4, 3, 40, 36)).astype(np.float32)
  x_nhwc = jnp.asarray(x.transpose(0, 2, 3, 1))
  forward = nnx.jit(lambda m, x: m(x)[0])

  model.eval()
  torch_model.eval()
  with torch.no_grad():
    expected_eval = torch_model(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(forward(model, x_nhwc), expected_eval, atol=1e-4, rtol=1e-4)
  # Eval mode leaves the running statistics alone.
  np.testing.assert_array_equal(model.bn1.mean[...], torch_model.bn1.running_mean.numpy())

  model.train()
  torch_model.train()
  with torch.no_grad():
    expected_train = torch_model(torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(forward(model, x_nhwc), expected_train, atol=1e-4, rtol=1e-4)
  # One training step moves the running mean by PyTorch's momentum 0.1. (The running variance
  # differs by design: PyTorch averages the unbiased batch variance, flax the biased one.)
  np.testing.assert_allclose(model.bn1.mean[...], torch_model.bn1.running_mean.numpy(),
                             atol=1e-5)
  np.testing.assert_allclose(model.layer4[1].bn2.mean[...],
                             torch_model.layer4[1].bn2.running_mean.numpy(), atol=1e-4)
  assert model.bn1.epsilon == torch_model.bn1.eps == 1e-5


def test_alexnet_matches_pytorch_and_takes_a_rectangular_gaze_input():
  torch.manual_seed(0)
  torch_model = torch_models.AlexNet(num_classes=2).eval()
  # Built from shapes (initialising 61M parameters is slow on CPU) and filled from the
  # checkpoint; only the dropout's PRNG state then needs real values.
  model = nnx.eval_shape(lambda: alexnet.AlexNet(num_classes=2, rngs=nnx.Rngs(0)))
  convert.load_torchvision(model, {k: v.numpy() for k, v in torch_model.state_dict().items()})
  nnx.reseed(model, default=0)
  model.eval()
  # The gaze experiment's 227 rows; 200 columns leave a 6x5 map that AdaptiveAvgPool2d stretches
  # to 6x6. fc6 also checks the NCHW -> NHWC permutation of its input rows.
  x = np.random.default_rng(1).standard_normal((2, 3, 227, 200)).astype(np.float32)
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(x)).numpy()
  logits, features = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x.transpose(0, 2, 3, 1)))
  assert features["conv5"].shape == (2, 6, 5, 256)
  assert features["pooled"].shape == (2, 6, 6, 256)
  np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-3)


def test_inception_shapes_at_299(abstract_inception):
  model = abstract_inception
  logits, features = jax.eval_shape(lambda m, x: m(x), model,
                                    jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32))
  assert logits.shape == (2, 1000) and features["aux_logits"].shape == (2, 1000)
  # torchvision's documented sizes at 299: 35x35x288 after Mixed_5d, 17x17x768 after Mixed_6e,
  # 8x8x2048 after Mixed_7c.
  assert features["Mixed_5d"].shape == (2, 35, 35, 288)
  assert features["Mixed_6e"].shape == (2, 17, 17, 768)
  assert features["Mixed_7c"].shape == (2, 8, 8, 2048)
  with pytest.raises(ValueError, match="at least 75x75"):
    jax.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((1, 74, 100, 3), jnp.float32))
