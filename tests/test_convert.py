"""torchvision -> NNX weight conversion, checked against the PyTorch networks themselves.

No download: the PyTorch side is tests/references/torch_models.py (torchvision's architecture and
state_dict keys) with random weights, saved with torch.save / safetensors, converted, and the
logits and every stage's features compared in eval mode.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx

from tests.references import torch_models
from saliency_jax import models
from saliency_jax.models import convert
from saliency_jax.models import resnet
from saliency_jax.models import torch_io


def _randomise_batch_norm(torch_model, seed=1):
  # Fresh BatchNorm layers are the identity in eval mode; random statistics test the mapping.
  generator = torch.Generator().manual_seed(seed)
  for module in torch_model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      n = module.num_features
      module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
      module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
      module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
      module.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
  return torch_model.eval()


def _torch_resnet(name, num_classes=10, seed=0):
  torch.manual_seed(seed)
  return _randomise_batch_norm(torch_models.resnet(name, num_classes=num_classes))


def _state_dict(torch_model):
  return {k: v.numpy() for k, v in torch_model.state_dict().items()}


def _abstract_resnet(spec, **kwargs):
  return nnx.eval_shape(lambda: resnet.ResNet(spec, rngs=nnx.Rngs(0), **kwargs))


def _assert_close(actual, expected, name):
  # Tolerance relative to the feature map's scale: activations of deep random networks reach
  # ~100, where float32 rounding alone differs by ~1e-5.
  scale = max(1.0, float(np.abs(expected).max()))
  error = float(np.abs(np.asarray(actual) - expected).max())
  assert error <= 1e-4 * scale, f"{name}: max error {error} at scale {scale}"


def _assert_same_forward(model, torch_model, shape=(2, 3, 64, 48)):
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  with torch.no_grad():
    expected_logits, expected = torch_model.forward_features(torch.from_numpy(x))
  model.eval()
  logits, features = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x.transpose(0, 2, 3, 1)))
  _assert_close(logits, expected_logits.numpy(), "logits")
  assert set(features) == set(expected)
  for name, value in expected.items():
    value = value.numpy()
    if value.ndim == 4:
      value = value.transpose(0, 2, 3, 1)
    _assert_close(features[name], value, name)


@pytest.mark.parametrize("name", ["resnet18", "bottleneck_tiny"])
def test_converted_resnet_matches_pytorch_logits_and_features(name, tmp_path):
  if name == "bottleneck_tiny":
    # ResNet-50's block type at width 8 with fewer blocks (ResNet-50 itself is slow on 2 CPUs);
    # two blocks in layer2 cover a stage's later blocks as well as its first.
    spec = resnet.ResNetSpec("bottleneck", (1, 2, 1, 1), width=8)
    torch.manual_seed(0)
    torch_model = _randomise_batch_norm(torch_models.ResNet("bottleneck", (1, 2, 1, 1), 8, 10))
  else:
    spec = resnet.SPECS[name]
    torch_model = _torch_resnet(name)
  path = tmp_path / "weights.pth"
  torch.save(torch_model.state_dict(), path)
  model = _abstract_resnet(spec, num_classes=10)
  convert.load_torchvision(model, path)
  _assert_same_forward(model, torch_model)


def test_safetensors_and_legacy_pth_and_npz_give_the_same_weights(tmp_path):
  torch_model = _torch_resnet("resnet_tiny", num_classes=4)
  state = torch_model.state_dict()
  safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()},
                              tmp_path / "w.safetensors")
  torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
  # A training checkpoint wrapping a DataParallel model's state_dict.
  torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}},
             tmp_path / "wrapped.pth")
  for file in ("w.safetensors", "legacy.pth", "wrapped.pth"):
    loaded = torch_io.load_state_dict(tmp_path / file)
    assert set(loaded) == set(state)
    for key, value in state.items():
      np.testing.assert_array_equal(loaded[key], value.numpy(), err_msg=f"{file}: {key}")

  # The command converts to .npz; loading that equals loading the checkpoint directly.
  assert convert.main(["--input", str(tmp_path / "w.safetensors"),
                       "--output", str(tmp_path / "w.npz"), "--arch", "resnet_tiny"]) == 0
  direct = _abstract_resnet(resnet.SPECS["resnet_tiny"], num_classes=4)
  convert.load_torchvision(direct, tmp_path / "w.safetensors")
  from_npz = _abstract_resnet(resnet.SPECS["resnet_tiny"], num_classes=4)
  convert.load_converted(from_npz, tmp_path / "w.npz")
  pairs = zip(convert._variables(direct), convert._variables(from_npz), strict=True)
  for (path, a), (_, b) in pairs:
    np.testing.assert_array_equal(a.get_value(), b.get_value(), err_msg=str(path))
  _assert_same_forward(from_npz, torch_model, shape=(1, 3, 40, 40))


def test_torch_reader_refuses_code_in_the_pickle(tmp_path):
  class Sneaky:
    def __reduce__(self):
      return (os.system, ("echo owned",))

  torch.save({"weight": torch.zeros(2), "payload": Sneaky()}, tmp_path / "evil.pth")
  with pytest.raises(Exception, match="refusing to load"):
    torch_io.load_state_dict(tmp_path / "evil.pth")


def test_loading_errors_name_expected_and_found():
  tiny = _state_dict(torch_models.resnet("resnet_tiny", num_classes=10))
  model = _abstract_resnet(resnet.SPECS["resnet_tiny"], num_classes=10)
  bottleneck = _state_dict(torch_models.ResNet("bottleneck", (3, 4, 6, 3), 8, 10))
  with pytest.raises(ValueError, match=r"checkpoint holds a ResNet variant \(bottleneck blocks, "
                                       r"stages \(3, 4, 6, 3\).*model is resnet_tiny \(basic"):
    convert.load_torchvision(model, bottleneck)
  missing = {k: v for k, v in tiny.items() if k != "layer2.1.bn1.running_var"}
  with pytest.raises(ValueError, match=r"1 keys missing from the checkpoint: "
                                       r"\['layer2.1.bn1.running_var'\]"):
    convert.load_torchvision(model, missing)
  bad_shape = dict(tiny, **{"layer1.0.conv1.weight": np.zeros((8, 8, 1, 1), np.float32)})
  with pytest.raises(ValueError, match=r"layer1.0.conv1.weight: checkpoint \(8, 8, 1, 1\)"):
    convert.load_torchvision(model, bad_shape)
  with pytest.raises(ValueError, match="fc has 10 classes but the model's has 3"):
    convert.load_resnet(_abstract_resnet(resnet.SPECS["resnet_tiny"], num_classes=3), tiny)
  with pytest.raises(ValueError, match="not a torchvision ResNet or AlexNet"):
    convert.detect_architecture({"encoder.weight": np.zeros(3)})


def test_command_converts_and_rejects_another_architecture(tmp_path, capsys):
  torch_model = torch_models.resnet("resnet_tiny")
  torch.save(torch_model.state_dict(), tmp_path / "tiny.pth")
  assert convert.main(["--input", str(tmp_path / "tiny.pth"), "--output",
                       str(tmp_path / "out.npz"), "--arch", "resnet18"]) == 1
  assert "--arch is 'resnet18' but" in capsys.readouterr().err
  assert not (tmp_path / "out.npz").exists()
  # The shell command, with the architecture detected from the keys.
  result = subprocess.run(
      [sys.executable, "-W", "error::RuntimeWarning", "-m", "saliency_jax.models.convert",
       "--input", str(tmp_path / "tiny.pth"), "--output", str(tmp_path / "out.npz")],
      capture_output=True, text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  assert "ResNet, 241,712 parameters" in result.stdout  # resnet_tiny at 1000 classes.
  with np.load(tmp_path / "out.npz") as data:
    np.testing.assert_array_equal(data["layer3/1/bn2/mean"],
                                  torch_model.layer3[1].bn2.running_mean.numpy())


def test_load_pretrained_fills_task_net_and_saliency_backbone(tmp_path):
  task_torch = _torch_resnet("resnet_tiny", num_classes=1000, seed=2)
  saliency_torch = _torch_resnet("resnet_tiny", num_classes=1000, seed=3)
  torch.save(task_torch.state_dict(), tmp_path / "task.pth")
  safetensors.torch.save_file(saliency_torch.state_dict(), tmp_path / "saliency.safetensors")
  config = {"name": "saliency_sampler", "task_net": "resnet_tiny", "task_size": 64,
            "low_res_size": 64, "saliency_backbone": "resnet_tiny", "saliency_depth": 10}
  model = nnx.eval_shape(lambda: models.build_model(config, num_outputs=5, rngs=nnx.Rngs(0)))
  models.load_pretrained(model, task_net=tmp_path / "task.pth",
                         saliency_backbone=tmp_path / "saliency.safetensors")
  # The task network's 1000-class fc is not copied into the 5-output model.
  assert model.task_net.fc.kernel.get_value().shape == (64, 5)
  assert isinstance(model.task_net.fc.kernel.get_value(), jax.ShapeDtypeStruct)
  np.testing.assert_array_equal(
      model.task_net.layer4[1].conv2.kernel.get_value(),
      task_torch.layer4[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0))
  # The saliency backbone (two stages) takes the checkpoint's first two stages.
  np.testing.assert_array_equal(
      model.saliency_net.backbone.layer2[0].downsample.bn.var.get_value(),
      saliency_torch.layer2[0].downsample[1].running_var.numpy())
  with pytest.raises(ValueError, match="no saliency or localisation network"):
    uniform = nnx.eval_shape(lambda: models.build_model(
        dict(config, name="uniform"), num_outputs=5, rngs=nnx.Rngs(0)))
    models.load_pretrained(uniform, saliency_backbone=tmp_path / "saliency.safetensors")


def test_deformable_task_net_loads_a_converted_plain_network(tmp_path):
  # The offset convolutions have no counterpart in torchvision's network: they keep their
  # initial (zero) offsets, and everything else comes from the file.
  torch_model = _torch_resnet("resnet_tiny", num_classes=1000, seed=4)
  torch.save(torch_model.state_dict(), tmp_path / "tiny.pth")
  convert.convert_file(tmp_path / "tiny.pth", tmp_path / "tiny.npz")
  config = {"name": "deformable", "task_net": "resnet_tiny", "task_size": 64}
  model = models.build_model(config, num_outputs=5, rngs=nnx.Rngs(0))
  models.load_pretrained(model, task_net=tmp_path / "tiny.npz")
  np.testing.assert_array_equal(
      model.task_net.layer4[1].conv2.kernel.get_value(),
      torch_model.layer4[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0))
  offsets = [v.get_value() for path, v in nnx.iter_graph(model)
             if isinstance(v, nnx.Param) and "offset" in path]
  assert offsets and all(np.all(np.asarray(o) == 0) for o in offsets)


def test_command_rejects_a_checkpoint_without_its_classifier(tmp_path, capsys):
  state = torch_models.resnet("resnet_tiny").state_dict()
  del state["fc.weight"], state["fc.bias"]
  torch.save(state, tmp_path / "headless.pth")
  assert convert.main(["--input", str(tmp_path / "headless.pth"), "--output",
                       str(tmp_path / "out.npz")]) == 1
  assert "without its classifier ('fc.weight' is missing)" in capsys.readouterr().err
  assert not (tmp_path / "out.npz").exists()
