"""The sampler benchmark (benchmarks/sampler.py) on its tiny case, so that CI catches breakage.

Besides running the whole code path once (contenders, interleaved timing, tables, JSON), it
checks that the JAX and PyTorch contenders compute the same layer: given the same logits, image
and upstream gradient, the sampled images and the gradients to the logits agree.
"""

import json
import sys

import numpy as np
import pytest
import torch

from benchmarks import sampler as bench
from tests.references import torch_sampler


def test_benchmark_runs_and_writes_every_contender(tmp_path, monkeypatch, capsys):
  output = tmp_path / "sampler.json"
  monkeypatch.setattr(sys, "argv", ["sampler.py", "--cases=tiny", "--repeats=2",
                                    f"--output={output}"])
  bench.main()
  results = json.loads(output.read_text())
  case = results["cases"]["tiny"]
  assert (case["batch"], case["image"], case["output"], case["grid"]) == bench.CASES["tiny"]
  expected = {"jax (uint8 image)", "jax (float32 image)", "torch reference", "torch tuned"}
  for mode in ("fwd", "fwd+bwd"):
    assert set(case[mode]) == expected
    for timing in case[mode].values():
      assert timing["median_ms"] > 0 and len(timing["all_ms"]) == 2
  assert set(case["parts"]) == {"jax grid (logits -> grid)",
                                "jax sampling (uint8 image, grid -> sampled)",
                                "jax layer (uint8 image, logits -> sampled)"}
  assert results["implementations"] == ["xla"]
  assert results["environment"]["jax_backend"] == "cpu"
  printed = capsys.readouterr().out
  assert "speed-up vs torch reference" in printed and "the grid inside the layer" in printed


def test_unknown_implementation_is_refused(monkeypatch):
  monkeypatch.setattr(sys, "argv", ["sampler.py", "--implementations=xla,cuda"])
  with pytest.raises(SystemExit):
    bench.main()


def test_jax_and_torch_contenders_compute_the_same_layer():
  batch, size, out, grid_size = bench.CASES["tiny"]
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  logits = rng.normal(size=(batch, grid_size, grid_size)).astype(np.float32)
  cotangent = rng.normal(size=(batch, out, out, 3)).astype(np.float32)
  padding = grid_size - 1

  import saliency_jax as sj  # pylint: disable=import-outside-toplevel
  layer = lambda lg, im: sj.saliency_sample(im, lg, (out, out), padding=padding)[0]
  sampled, grad = bench._forward_backward(layer, logits, image, cotangent)

  t_logits = torch.tensor(logits[:, None]).requires_grad_()
  t_image = torch.tensor(image.transpose(0, 3, 1, 2)).float()
  t_sampled = torch_sampler.reference_saliency_sample(t_image, t_logits, (out, out),
                                                      padding=padding)[0]
  t_sampled.backward(torch.tensor(cotangent.transpose(0, 3, 1, 2)))
  # Values are 0..255: float32 rounding of the grid (~1e-7 of [-1, 1]) moves a sample by up to
  # the image's slope times that, ~1e-2 here.
  np.testing.assert_allclose(np.asarray(sampled),
                             t_sampled.detach().numpy().transpose(0, 2, 3, 1), atol=3e-2)
  np.testing.assert_allclose(np.asarray(grad), t_logits.grad.numpy()[:, 0],
                             rtol=1e-3, atol=1e-3 * np.abs(t_logits.grad.numpy()).max())
