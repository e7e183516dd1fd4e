"""The unzoom benchmark (benchmarks/unzoom.py) with --quick, so that CI catches breakage."""

import json
import sys

from benchmarks import unzoom as bench


def test_quick_run_writes_every_timing_and_error(tmp_path, monkeypatch, capsys):
  output = tmp_path / "unzoom.json"
  monkeypatch.setattr(sys, "argv", ["unzoom.py", "--quick", f"--output={output}"])
  bench.main()
  results = json.loads(output.read_text())
  assert set(results["timings"]) == {
      "grid_sample", "grid_sample antialias", "grid_sample antialias, XLA formulation",
      "invert_grid 7 -> 32", "invert_grid 7 -> 32, XLA formulation",
      "invert_grid 7 -> 32 axis_aligned", "unwarp stride 8"}
  for timing in results["timings"].values():
    assert timing["median_ms"] > 0 and len(timing["all_ms"]) == 2
  for grid in ("uniform", "peaked"):
    errors = results["antialias_errors"][grid]
    assert errors["plain"] > 0 and errors["antialias"] > 0
  assert results["environment"]["jax_backend"] == "cpu"
  assert isinstance(results["native_kernels"], bool)
  assert "error reduction" in capsys.readouterr().out
