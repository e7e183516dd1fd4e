"""Files that readers must never see half written: results, configs, benchmark records."""
from __future__ import annotations

import json
import os
import threading
from typing import Any


def write_json(path: str, value: Any) -> None:
  """Writes `value` as indented JSON through a temporary file, creating the parent folder."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  # A temporary name of its own: two writers of one path must not write into each other's.
  tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
