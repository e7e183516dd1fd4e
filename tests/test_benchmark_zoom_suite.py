"""benchmarks/zoom_suite.py (its configs, collapse measure, targets, a quick run) and the oracle's
saliency of benchmarks/zoom_oracle.py."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax import models
from benchmarks import common
from benchmarks import zoom_oracle
from benchmarks import zoom_suite
from conftest import ROOT


def test_collapse_is_the_largest_rise_above_the_running_minimum():
  # Minimum 1.0 at step 2, then 1.6: a rise of 60 %; the earlier 2.0 -> 1.0 fall is no rise.
  assert zoom_suite.collapse([[1, 2.0], [2, 1.0], [3, 1.6], [4, 0.5], [5, 0.6]]) == pytest.approx(
      60.0)
  assert zoom_suite.collapse([[1, 2.0], [2, 1.5], [3, 1.0]]) == 0.0


def test_targets_follow_the_issue():
  # Chance 25 %: uniform at 60 % keeps part of the detail, so the sampler must add 15 points.
  assert zoom_suite._target(75.5, 60.0, 25.0) == "never hurts: ok, helps: ok"
  assert zoom_suite._target(70.0, 60.0, 25.0) == "never hurts: ok, helps: MISSED"
  # Uniform near chance: the sampler must reach twice chance; uniform above 90 %: only never-hurts.
  assert zoom_suite._target(49.0, 26.0, 25.0) == "never hurts: ok, looks: MISSED"
  assert zoom_suite._target(95.0, 96.5, 25.0) == "never hurts: MISSED"


_RECORDER = """
import argparse, sys
from benchmarks import zoom_suite
out, first = sys.argv[1], int(sys.argv[2])
args = argparse.Namespace(tag="t", sampler_recipe=False)
results = {"eval": {"top1": 0.5, "loss": 1.0}, "loss_curve": [[1, 1.0]], "steps": 1,
           "images_per_sec": 1.0}
for seed in range(first, first + 25):
  with zoom_suite._locked(out):
    zoom_suite._record(out, args, {}, "zoom_glyph", 64, "uniform", seed, results)
"""


def test_a_record_keeps_each_views_top1_when_the_sampler_has_two(tmp_path):
  out = str(tmp_path / "suite.json")
  args = argparse.Namespace(tag="t", sampler_recipe=True)
  base = {"loss_curve": [[1, 1.0]], "steps": 1, "images_per_sec": 1.0}
  zoom_suite._record(out, args, {}, "zoom_count", 128, "saliency_sampler", 0, {
      **base, "eval": {"top1": 0.558, "loss": 0.9, "top1_warped": 0.536, "top1_uniform": 0.542}})
  zoom_suite._record(out, args, {}, "zoom_count", 128, "uniform", 0, {
      **base, "eval": {"top1": 0.796, "loss": 0.5}})
  with open(out) as f:
    tag = json.load(f)["tags"]["t"]
  runs = tag["runs"]["zoom_count"]["128"]
  # The recipe's fields as they are now: the model's and the optimizer's.
  assert tag["sampler_recipe"] == {**models.SAMPLER_RECIPE, "optimizer.clip_per_group": True,
                                   "optimizer.saliency_delay_loss": 0.9}
  assert runs["saliency_sampler"][0]["top1_views"] == {"warped": 0.536, "uniform": 0.542}
  assert "top1_views" not in runs["uniform"][0]


def test_suites_side_by_side_keep_each_others_runs(tmp_path):
  # Two real processes record 25 seeds each into one JSON at once (as two suite lanes do).
  out = str(tmp_path / "suite.json")
  processes = [subprocess.Popen([sys.executable, "-c", _RECORDER, out, str(first)], cwd=ROOT)
               for first in (0, 100)]
  assert [p.wait(timeout=120) for p in processes] == [0, 0]
  with open(out) as f:
    records = json.load(f)["tags"]["t"]["runs"]["zoom_glyph"]["64"]["uniform"]
  assert [r["seed"] for r in records] == [*range(25), *range(100, 125)]


def test_suite_config_overrides_and_rejects_unknown_fields():
  config = zoom_suite.suite_config("zoom_marker", 64, "stn_affine", 3,
                                   {"model.saliency_head_init": "torch", "num_train_steps": 7})
  assert (config.data.name, config.model.task_size, config.model.name, config.seed) == (
      "zoom_marker", 64, "stn_affine", 3)
  assert config.model.saliency_head_init == "torch" and config.num_train_steps == 7
  assert config.optimizer.lr_multipliers.saliency_head == 0.01  # STN affine's own rates.
  with pytest.raises(SystemExit, match="--set: model.zoom is not a config field"):
    zoom_suite.suite_config("zoom_marker", 64, "uniform", 0, {"model.zoom": 2})
  with pytest.raises(SystemExit, match="--set: model.task_size cannot take 'big'"):
    zoom_suite.suite_config("zoom_marker", 64, "uniform", 0, {"model.task_size": "big"})
  # The recipe reaches the sampler's runs only (the others reject the uniform view).
  recipe = zoom_suite.suite_config("zoom_glyph", 256, "saliency_sampler", 0,
                                   {"model.exact_identity": False}, sampler_recipe=True)
  assert (recipe.model.antialias, recipe.model.uniform_view, recipe.optimizer.clip_per_group,
          recipe.optimizer.saliency_delay_loss, recipe.model.exact_identity) == (
              True, "mean", True, 0.9, False)  # --set comes last.
  uniform = zoom_suite.suite_config("zoom_glyph", 256, "uniform", 0, {}, sampler_recipe=True)
  assert uniform.model.uniform_view == "off" and not uniform.optimizer.clip_per_group
  assert zoom_suite.parse_overrides(["model.antialias=True", "model.saliency_head_init=zero"]) == {
      "model.antialias": True, "model.saliency_head_init": "zero"}
  with pytest.raises(SystemExit, match="--set: expected FIELD=VALUE"):
    zoom_suite.parse_overrides(["antialias"])
  with pytest.raises(SystemExit, match="--families: expected some of"):
    zoom_suite.main(["--families=zoom_text"])


def test_quick_run_writes_and_resumes(tmp_path, capsys):
  out = tmp_path / "suite.json"
  args = ["--quick", "--families=zoom_count", f"--workdir={tmp_path / 'runs'}", f"--out={out}"]
  zoom_suite.main(args)
  runs = json.loads(out.read_text())["tags"]["default"]["runs"]["zoom_count"]["64"]
  assert set(runs) == {"saliency_sampler", "uniform"}
  # The sampler's zero head has barely moved in 8 steps: its map is near uniform.
  (sampler,) = runs["saliency_sampler"]
  assert sampler["look"]["images"] == 16 and 0 <= sampler["look"]["map_information"] < 0.01
  assert 0.8 < sampler["look"]["target_magnification"] < 1.25
  assert "look" not in runs["uniform"][0]
  for records in runs.values():
    (record,) = records
    assert record["seed"] == 0 and record["steps"] == 8 and 0 <= record["top1"] <= 1
    assert [step for step, _ in record["loss_curve"]] == [4, 8]
  printed = capsys.readouterr().out
  assert "zoom_count" in printed and "never hurts" in printed
  # A second call finds every run in the JSON and trains nothing.
  zoom_suite.main(args)
  assert "===" not in capsys.readouterr().out
  # The tag holds runs without the recipe and with the quick overrides: runs that would differ
  # are refused before anything is trained or written.
  before = out.read_text()
  for extra in (["--sampler_recipe"], ["--set=model.temperature=2.0"]):
    with pytest.raises(SystemExit, match="--tag 'default': its runs were made with"):
      zoom_suite.main(args + extra)
  assert "===" not in capsys.readouterr().out and out.read_text() == before


def test_oracle_logits_magnify_the_target_tile():
  # The oracle's bump peaks in the grid cell holding the box's centre, and the sampler's warp
  # of it gives the target tile at least 4x the output pixels of uniform sampling (counted from
  # the grid: the share of sample points that fall inside the box).
  boxes = np.array([[131, 340, 179, 388], [10, 20, 58, 68]])  # (top, left, bottom, right), px.
  logits = zoom_oracle.oracle_logits(boxes, 512, 6.0)
  assert logits.shape == (2, zoom_oracle.GRID, zoom_oracle.GRID)
  cell = 512 / zoom_oracle.GRID
  for box, map_ in zip(boxes, logits):
    row, col = np.unravel_index(np.argmax(map_), map_.shape)
    assert int((box[0] + box[2]) / 2 // cell) == row and int((box[1] + box[3]) / 2 // cell) == col
    assert map_.max() <= 6.0 and map_.max() > 5.0
  grid = np.asarray(sj.attraction_grid(sj.softmax_saliency(logits), (64, 64)))
  x, y = (grid[..., 0] + 1) / 2 * 511, (grid[..., 1] + 1) / 2 * 511
  for b, box in enumerate(boxes):
    inside = ((y[b] >= box[0]) & (y[b] < box[2]) & (x[b] >= box[1]) & (x[b] < box[3])).sum()
    assert inside >= 4 * (48 / 8) ** 2, inside


def test_box_magnification_counts_the_grids_points_in_the_box():
  # The identity grid gives a box on the sample lattice its own share (1x); the oracle's warp
  # (4x the points in the box, above) at least 2x linearly; a 2x crop of the top-left quarter,
  # as a grid, 2x for a box inside it and 0 for one outside.
  side, task = 512, 64
  boxes = np.array([[128, 256, 192, 320], [10, 20, 58, 68]])  # (top, left, bottom, right).
  xyxy = boxes[:, [1, 0, 3, 2]]
  identity = np.asarray(sj.attraction_grid(np.full((2, 31, 31), 1 / 961.0), (task, task),
                                           align_corners=False))
  np.testing.assert_allclose(common.box_magnification(identity, xyxy, side, align_corners=False), [1.0, 1.0],
                             atol=0.07)
  oracle = np.asarray(sj.attraction_grid(sj.softmax_saliency(
      zoom_oracle.oracle_logits(boxes, side, 6.0)), (task, task), align_corners=False))
  assert np.all(common.box_magnification(oracle, xyxy, side, align_corners=False) >= 2.0)
  crop = (identity - 1) / 2  # [-1, 0]: the top-left quarter.
  np.testing.assert_allclose(common.box_magnification(crop, xyxy, side, align_corners=False), [0.0, 2.0],
                             atol=0.1)


def test_suite_plot_draws_each_mean_with_its_spread_and_chance():
  from matplotlib import container, pyplot as plt  # pylint: disable=g-import-not-at-top
  from benchmarks import plot  # pylint: disable=g-import-not-at-top
  record = lambda seed, top1: {"seed": seed, "top1": top1, "steps": 600}  # noqa: E731
  results = {"environment": {"date": "today"}, "tags": {"a": {"runs": {
      "zoom_glyph": {"64": {"uniform": [record(0, 0.1), record(1, 0.3)]},
                     "128": {"saliency_sampler": [record(0, 0.5)]}},
      "zoom_count": {"64": {"uniform": [record(0, 0.25)]}}}}}}
  figure, axis = plt.subplots()
  plot.plot_zoom_suite(axis, results)
  # Sizes in decreasing order within a family; the std of 10 % and 30 % is 14.14 points.
  assert [bar.get_width() for bar in axis.patches] == pytest.approx([50.0, 20.0, 25.0])
  assert [label.get_text().split(",")[0] for label in axis.get_yticklabels()] == [
      "a: zoom_glyph 128", "a: zoom_glyph 64", "a: zoom_count 64"]
  chance = axis.collections[-1].get_offsets()[:, 0]
  np.testing.assert_allclose(chance, [12.5, 12.5, 25.0])
  bars = next(c for c in axis.containers if isinstance(c, container.ErrorbarContainer))
  error_bars = bars.lines[2][0].get_segments()
  np.testing.assert_allclose([s[1][0] - s[0][0] for s in error_bars], [0.0, 2 * 14.1421, 0.0],
                             atol=1e-3)
  plt.close(figure)
