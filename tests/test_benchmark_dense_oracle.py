"""The dense oracle's magnification per box (benchmarks/dense_oracle.py), against grids whose
magnification is known by construction."""

import json
import sys

import numpy as np
import pytest

from benchmarks import dense_oracle


def _grid(task, low, high):
  """A `[1, task, task, 2]` align_corners grid reading `[low, high]^2` (normalised) evenly."""
  axis = np.linspace(low, high, task)
  x, y = np.meshgrid(axis, axis)
  return np.stack([x, y], axis=-1)[None]


def test_magnification_is_one_for_uniform_two_for_a_half_crop_and_zero_outside():
  source, task = 512, 128
  boxes = np.array([[[128.0, 128.0, 192.0, 192.0], [0.0, 0.0, 64.0, 64.0]]], np.float32)
  keep = np.array([[True, True]])
  # Uniform downsampling: 16 x 16 of its points fall in a 64 px box, so 1x up to the sampling's
  # phase (the points are 511 / 127 px apart, not 4).
  uniform = dense_oracle.magnifications(_grid(task, -1.0, 1.0), boxes, keep, source)
  np.testing.assert_allclose(uniform, [1.0, 1.0], atol=0.07)
  # The central half of the image read by all 128 points: 2x inside it; the corner box, outside
  # the crop, gets no point at all.
  crop = dense_oracle.magnifications(_grid(task, -0.5, 0.5), boxes, keep, source)
  assert crop[0] == pytest.approx(2.0, abs=0.1)
  assert crop[1] == 0.0
  assert dense_oracle.summary(crop)["none"] == 0.5


def test_a_small_run_writes_every_row(tmp_path, monkeypatch):
  out = tmp_path / "oracle.json"
  monkeypatch.setattr(sys, "argv", ["dense_oracle.py", "--examples=2", f"--out={out}"])
  dense_oracle.main()
  rows = json.loads(out.read_text())["rows"]
  assert len(rows) == 12  # 2 grids x 3 KDEs x 2 temperatures.
  assert {row["box_mass"] for row in rows} == {"equal", "inverse_area"}
  for row in rows:
    assert row["small"]["median"] >= 0 and 0 <= row["small"]["none"] <= 1
