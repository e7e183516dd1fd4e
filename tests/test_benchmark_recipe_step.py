"""The demo recipes' step benchmark (benchmarks/recipe_step.py) with --quick, so that CI catches
breakage."""

import json
import sys

from benchmarks import recipe_step as bench


def test_quick_run_times_the_recipes_asked_for(tmp_path, monkeypatch, capsys):
  output = tmp_path / "recipe_step.json"
  monkeypatch.setattr(sys, "argv", ["recipe_step.py", "--quick", f"--output={output}",
                                    "--recipes=uniform,demo,no evidence"])
  bench.main()
  results = json.loads(output.read_text())
  assert set(results["times"]) == {"uniform", "demo", "no evidence"}
  assert results["recipes"] == {
      "uniform": {"base": "configs/default.py:common_config",
                  "fields": {"model.name": "uniform"}},
      "demo": {"base": "configs/default.py:get_config", "fields": {}},
      "no evidence": {"base": "configs/default.py:get_config",
                      "fields": {"model.saliency_supervision": 0.0,
                                 "model.warp_gradient": True}}}
  for timing in results["times"].values():
    assert timing["median_ms"] > 0 and len(timing["all_ms"]) == 2
  assert results["batch_size"] == 8 and results["task_size"] == 32
  assert "images/s" in capsys.readouterr().out
