"""Config schemas: the defaults as a locked `ConfigDict`, and a table of checks.

Each layer owns its fields and their defaults: `saliency_jax.models` the model's,
`saliency_jax.data` the data's, `saliency_jax.train` the trainer's (which holds the other two as
`model` and `data`). A layer's schema is a function returning a locked `ml_collections.ConfigDict`
of its defaults; the names and types of the fields are those of the defaults, which `ConfigDict`
enforces on every assignment (a typo cannot add a field, a string cannot replace a number, a
float cannot replace an int; an int given for a float becomes a float). `merge` applies a
config, complete or partial, ConfigDict or dict, to fresh defaults through those same
assignments, and adds what `ConfigDict` lets through: None in a field whose default is not None,
a bool in a numeric field (a `ConfigDict` keeps True in an int field, and turns it into 1.0 in a
float field as it is assigned, before any check can see it), and a sub-config replaced wholesale
by a dict of other fields.

Ranges and relations between fields are rows of a table, `Check(field, condition, expected,
advice)`, run in order by `check`; the first failing row raises one sentence that names the
field, says what was expected and what was found. Nothing here reads files or builds anything,
so a layer checks its config in microseconds, before any work starts.

This module imports only ml_collections and NumPy: every layer uses it, it uses none.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
import dataclasses
from typing import Any

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class Check:
  """One row of a config's table of checks.

  Attributes:
    field: the dotted name the message names (the field that is wrong when `condition` fails).
    condition: `config -> bool`, given the whole config the table belongs to (so that it can
      relate fields); it may assume every field has its default's type (`merge` ran first).
    expected: what the field must be, as a phrase ("an int >= 1"); or `config -> str` when the
      phrase depends on other fields.
    advice: a sentence said after the message, when what to do is not obvious from it.
  """

  field: str
  condition: Callable[[Any], bool]
  expected: str | Callable[[Any], str]
  advice: str = ""


def lookup(config: Any, field: str) -> Any:
  """The value of the dotted `field` of a ConfigDict or nested dict."""
  value = config
  for part in field.split("."):
    value = value[part]
  return value


def nested(name: str, checks: Collection[Check]) -> tuple[Check, ...]:
  """The rows of the sub-config `name`'s table, as rows of the config that holds it."""

  def row(inner: Check) -> Check:
    expected = inner.expected
    if callable(expected):
      expected = lambda config, inner=inner: inner.expected(config[name])  # noqa: E731
    return Check(f"{name}.{inner.field}", lambda config: inner.condition(config[name]), expected,
                 inner.advice)

  return tuple(row(inner) for inner in checks)


def check(config: Any, checks: Collection[Check], *, prefix: str,
          error: type[ValueError] = ValueError) -> None:
  """Runs the rows of `checks` on `config` in order; raises `error` at the first that fails.

  Args:
    config: a merged config (see `merge`).
    checks: the table.
    prefix: how messages name the config ("config", "data", "model_config").
    error: the exception class raised (a `ValueError`).
  """
  for row in checks:
    if not row.condition(config):
      expected = row.expected(config) if callable(row.expected) else row.expected
      value = lookup(config, row.field)
      if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
      raise error(f"{prefix}.{row.field}: expected {expected}; got {value!r}."
                  + (f" {row.advice}" if row.advice else ""))


def flatten(config: Any, *, free: Collection[str] = (), prefix: str = "") -> dict[str, Any]:
  """`{"a.b": value}` for every field of a nested ConfigDict or dict.

  Args:
    config: the config.
    free: dotted names of mappings whose keys are data, not fields (kept whole).
    prefix: prepended to every name (used by the recursion).

  Not `flax.traverse_util.flatten_dict`: the config modules import without Flax.
  """
  flat = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, Mapping)) and name not in free:
      flat.update(flatten(value, free=free, prefix=name + "."))
    else:
      flat[name] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
  return flat


def _parent(config: ml_collections.ConfigDict, field: str):
  *path, key = field.split(".")
  for part in path:
    config = config[part]
  return config, key


def _type_name(kind: type, nullable: bool) -> str:
  if kind is type(None):
    return "None"
  return f"None or {kind.__name__}" if nullable else kind.__name__


def merge(defaults: ml_collections.ConfigDict, given: Any, *, prefix: str,
          free: Collection[str] = (), complete: bool = False, missing_hint: str = "",
          error: type[ValueError] = ValueError) -> ml_collections.ConfigDict:
  """`defaults` with every field of `given` assigned to it, type-checked.

  Args:
    defaults: a fresh locked `ConfigDict` of defaults (the schema); it is changed and returned.
    given: a `ConfigDict` or (nested) dict of fields, all of them or some.
    prefix: how messages name the config.
    free: dotted names of mappings whose keys are data (`optimizer.lr_multipliers`).
    complete: every field of `defaults` must be in `given` (a trainer config is complete, a
      model or data config given as a dict may leave fields to their defaults).
    missing_hint: said after a missing field's name.
    error: the exception class raised.

  Returns:
    `defaults`, updated.

  Raises:
    error: naming the first field that is unknown, missing, None where its default is not, a
      bool where its default is a number, or of a type `ConfigDict` does not accept.
  """
  if not isinstance(given, (ml_collections.ConfigDict, Mapping)):
    getattr(given, "items", None)  # A config file that failed to load raises its error here.
    raise error(f"{prefix}: expected a ConfigDict or a dict of fields; got "
                f"{type(given).__name__}.")
  schema = flatten(defaults, free=free)
  values = flatten(given, free=free)
  unknown = [name for name in values if name not in schema]
  if unknown:
    parent = unknown[0].rpartition(".")[0]
    siblings = sorted({name[len(parent) + 1 if parent else 0:].partition(".")[0]
                       for name in schema if not parent or name.startswith(parent + ".")})
    where = f" of {prefix}.{parent}" if parent else ""
    raise error(f"{prefix}.{unknown[0]}: unknown field {unknown[0].rpartition('.')[2]!r}; the "
                f"fields{where} are {', '.join(siblings)}.")
  if complete:
    missing = [name for name in schema if name not in values]
    if missing:
      hint = f"; {missing_hint}" if missing_hint else ""
      raise error(f"{prefix}.{missing[0]}: missing field{hint}.")
  for name, value in values.items():
    parent, key = _parent(defaults, name)
    kind, nullable = parent.get_type(key), parent[key] is None  # None: an optional field.
    if isinstance(value, np.generic):
      value = value.item()  # ConfigDict takes Python scalars only.
    if ((value is None and not nullable)
        or (isinstance(value, bool) and kind in (int, float))):  # ConfigDict: True -> 1.0.
      raise error(f"{prefix}.{name}: expected {_type_name(kind, nullable)}; got {value!r}.")
    try:
      parent[key] = value
    except TypeError:
      raise error(f"{prefix}.{name}: expected {_type_name(kind, nullable)}; got {value!r} "
                  f"({type(value).__name__}).") from None
  return defaults
