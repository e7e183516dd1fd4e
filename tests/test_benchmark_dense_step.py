"""The dense step benchmark (benchmarks/dense_step.py) with --quick, so that CI catches breakage."""

import json

from benchmarks import dense_step as bench


def test_quick_run_times_every_step_and_the_unwarps_share(tmp_path, capsys):
  output = tmp_path / "dense_step.json"
  bench.main(["--quick", f"--output={output}"])
  results = json.loads(output.read_text())
  assert set(results["times"]) == {
      "unwarp", "resize instead", "uniform", "unwarp, axis-aligned",
      "resize instead, axis-aligned", "small", "small, resize instead",
      "small, the warp's gradient"}
  for timing in results["times"].values():
    assert timing["median_ms"] > 0 and len(timing["all_ms"]) == 2
  median = {name: t["median_ms"] for name, t in results["times"].items()}
  # The shares are the ratios of the medians they name.
  assert results["unwarp_share"] == median["unwarp"] / median["resize instead"] - 1
  assert results["unwarp_share_small"] == median["small"] / median["small, resize instead"] - 1
  assert (results["batch_size"], results["image_size"], results["task_size"]) == (2, 272, 64)
  assert "dense_scenes_small's" in capsys.readouterr().out
