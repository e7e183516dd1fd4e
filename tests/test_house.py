"""The package's layout: no import cycles, the ops on JAX alone, every dependency declared.

The imports are read from the source (every `import` statement, those inside functions too), so
a lazy import cannot hide a cycle or an undeclared dependency.
"""

import ast
import os
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "saliency_jax"
# The import name of each distribution the package may use.
DISTRIBUTIONS = {
    "jax": "jax", "numpy": "numpy", "flax": "flax", "optax": "optax", "orbax": "orbax-checkpoint",
    "ml_collections": "ml_collections", "absl": "absl-py", "tensorflow_datasets":
    "tensorflow-datasets", "grain": "grain", "PIL": "pillow", "tensorboardX": "tensorboardX",
    "importlib_resources": "importlib_resources", "ml_dtypes": "ml_dtypes",
}


def _modules() -> dict[str, str]:
  """Module name -> file of every module of the package."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
    for file in files:
      if file.endswith(".py"):
        path = os.path.join(directory, file)
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        modules[name.removesuffix(".__init__")] = path
  return modules


def _imports(name: str, path: str, modules) -> set[str]:
  """Every module `name` imports: the package's own by full name, others by top-level name."""
  package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      for alias in node.names:
        full = f"{base}.{alias.name}"
        found.add(full if full in modules else base)
  return {m if m in modules else m.split(".")[0] for m in found} - {name}


@pytest.fixture(scope="module")
def graph():
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles(graph):
  own = {name: {m for m in deps if m in graph} for name, deps in graph.items()}
  seen, path, cycles = set(), [], []

  def visit(name):
    if name in path:
      cycles.append(path[path.index(name):] + [name])
      return
    if name in seen:
      return
    seen.add(name)
    path.append(name)
    for dep in sorted(own[name]):
      visit(dep)
    path.pop()

  for name in sorted(own):
    visit(name)
  assert not cycles, f"import cycles: {cycles}"


def test_the_ops_import_only_jax_numpy_and_each_other(graph):
  for name, deps in graph.items():
    if name.startswith(f"{PACKAGE}.ops"):
      others = {d for d in deps if d not in sys.stdlib_module_names
                and not d.startswith(f"{PACKAGE}.ops") and d not in ("jax", "numpy")}
      assert not others, f"{name} imports {others}"


def _requirement_names(requirements: list[str]) -> set[str]:
  return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower().replace("_", "-")
          for r in requirements}


def test_every_third_party_import_is_a_declared_dependency(graph):
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
  core = _requirement_names(project["dependencies"])
  train = core | _requirement_names(project["optional-dependencies"]["train"])
  for name, deps in graph.items():
    third_party = {d for d in deps if d not in graph and d != PACKAGE
                   and d not in sys.stdlib_module_names}
    unknown = third_party - set(DISTRIBUTIONS)
    assert not unknown, f"{name} imports {unknown}: add them to DISTRIBUTIONS and pyproject.toml"
    needed = {DISTRIBUTIONS[d].lower().replace("_", "-") for d in third_party}
    declared = core if name == PACKAGE or name.startswith(f"{PACKAGE}.ops") else train
    assert needed <= declared, f"{name} needs {needed - declared}, not declared in pyproject.toml"


def test_importing_the_package_loads_no_training_library():
  # In a fresh interpreter: `import saliency_jax` (the ops) must not pull in Flax, tfds, grain...
  code = ("import sys, saliency_jax; print(sorted({m.split('.')[0] for m in sys.modules} & "
          "{'flax', 'optax', 'orbax', 'grain', 'tensorflow', 'tensorflow_datasets', "
          "'ml_collections', 'absl', 'PIL', 'torch'}))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.stdout.strip() == "[]", out.stdout
