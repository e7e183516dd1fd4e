"""Independent references for the tests: PyTorch ports of the authors' code, written from it.

The benchmarks time the same ports against the library, so they import them from here; nothing
here imports the benchmarks.
"""
