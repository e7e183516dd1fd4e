"""Reading PyTorch weight files into NumPy arrays, without PyTorch.

Two formats, the ones torchvision and the Hugging Face hub distribute:
- `.pth` / `.pt` written by `torch.save(state_dict)`: a zip archive (PyTorch >= 1.6) holding a
  pickle (`data.pkl`) whose tensors point at raw little-endian storages (`data/<key>`), or the
  older single-stream format (pickles followed by the raw storages).
- `.safetensors`: an 8-byte little-endian header length, a JSON header giving each tensor's
  dtype, shape and byte range, then the raw bytes.

The pickle is read by a restricted unpickler that only rebuilds tensors and ordered dicts (the
spirit of `torch.load(weights_only=True)`), so a checkpoint cannot run code on load. Tensors come
back as NumPy arrays (bfloat16 through `ml_dtypes`, which JAX already depends on).
"""

from collections import OrderedDict
from collections.abc import Mapping
import json
import os
import pickle
import struct
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
# The legacy (pre-zip) format starts with this pickled magic number.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _rebuild_tensor(storage, offset, shape, strides, *unused):
  """`torch._utils._rebuild_tensor_v2`: a strided view into a flat storage (in elements)."""
  del unused  # requires_grad, backward hooks, metadata.
  shape, strides = tuple(int(n) for n in shape), tuple(int(s) for s in strides)
  # as_strided trusts its arguments; a corrupt file must not make it read outside the storage.
  valid = len(shape) == len(strides) and offset >= 0 and min(strides, default=0) >= 0
  if valid and all(shape):
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    valid = last < len(storage)
  if not valid:
    raise ValueError(f"corrupt tensor in the checkpoint: shape {shape}, strides {strides}, "
                     f"offset {offset} in a storage of {len(storage)} elements.")
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=shape, strides=tuple(s * itemsize for s in strides))
  return np.array(view)  # A compact copy that owns its memory.


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _StorageType:
  """Stands in for `torch.FloatStorage` etc. in the pickle: it only carries the dtype."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


class _WeightsUnpickler(pickle.Unpickler):
  """Unpickles a state_dict and nothing else.

  Storages come from `load_storage(key, dtype, numel)` and tensors from
  `rebuild_tensor(storage, offset, shape, strides)`.
  """

  def __init__(self, file, load_storage, rebuild_tensor=_rebuild_tensor):
    super().__init__(file)
    self._load_storage = load_storage
    self._storages = {}
    self._allowed = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if (module, name) in self._allowed:
      return self._allowed[(module, name)]
    raise pickle.UnpicklingError(
        f"refusing to load {module}.{name}: a weights file should hold only tensors and dicts.")

  def persistent_load(self, pid):
    # ('storage', storage_type, key, location, numel[, view_metadata]).
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}.")
    storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
    if key not in self._storages:
      self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
    return self._storages[key]


def _load_zip(path: str):
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
      raise ValueError(f"{path}: expected one data.pkl in the zip archive of a torch.save file; "
                       f"found {len(pickles)}.")
    prefix = pickles[0][:-len("data.pkl")]

    def load_storage(key, dtype, numel):
      raw = archive.read(f"{prefix}data/{key}")
      return np.frombuffer(raw, dtype=dtype.newbyteorder("<"), count=numel)

    with archive.open(pickles[0]) as f:
      return _WeightsUnpickler(f, load_storage).load()


def _load_legacy(path: str):
  # The raw storages follow the pickled object, so the unpickler records what each tensor needs
  # and the tensors are built once the storages have been read.
  with open(path, "rb") as f:
    try:
      magic = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError):
      magic = None  # Not a pickle at all.
    if magic != _LEGACY_MAGIC:
      raise ValueError(f"{path}: not a torch.save file (neither a zip archive nor the legacy "
                       f"format).")
    pickle.load(f)  # Protocol version.
    pickle.load(f)  # System info (byte order, type sizes).
    dtypes = {}

    def load_storage(key, dtype, numel):
      del numel
      dtypes[key] = dtype
      return key

    def rebuild_later(key, offset, shape, strides, *unused):
      del unused
      return _PendingTensor(key, offset, tuple(shape), tuple(strides))

    obj = _WeightsUnpickler(f, load_storage, rebuild_later).load()
    storages = {}
    for key in pickle.load(f):
      (numel,) = struct.unpack("<q", f.read(8))
      dtype = dtypes[key].newbyteorder("<")
      storages[key] = np.frombuffer(f.read(numel * dtype.itemsize), dtype=dtype)
  return _resolve(obj, storages)


class _PendingTensor(tuple):
  """(storage key, offset, shape, strides) of a tensor whose storage is not read yet."""

  def __new__(cls, *args):
    return super().__new__(cls, args)


def _resolve(obj, storages):
  if isinstance(obj, _PendingTensor):
    key, offset, shape, strides = obj
    return _rebuild_tensor(storages[key], offset, shape, strides)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v, storages)) for k, v in obj.items())
  return obj


def load_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a `.safetensors` file into `{name: array}`.

  Our own reader: `safetensors.numpy` has no bfloat16 (NumPy lacks the dtype), which
  torchvision-style checkpoints on the hub often hold.
  """
  with open(path, "rb") as f:
    (header_size,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(header_size))
    data = f.read()
  arrays = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}; "
                       f"expected one of {sorted(_SAFETENSORS_DTYPES)}.")
    start, end = info["data_offsets"]
    dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
    arrays[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(info["shape"]).copy()
  return arrays


def load_torch_file(path: str) -> dict:
  """Reads whatever `torch.save` stored at `path` (tensors as NumPy arrays)."""
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch state_dict from a `.pth`/`.pt`/`.bin` or `.safetensors` file.

  Training checkpoints that wrap the weights (`{"state_dict": ...}` or `{"model": ...}`) are
  unwrapped, and the `module.` prefix of `nn.DataParallel` is removed.

  Args:
    path: the file.

  Returns:
    `{torch parameter name: array}`, in the file's order.

  Raises:
    ValueError: when the file holds no state_dict or uses an unsupported storage type.
  """
  path = os.fspath(path)
  if path.endswith(".safetensors"):
    state = load_safetensors(path)
  else:
    state = load_torch_file(path)
  for wrapper in ("state_dict", "model"):
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping) or not all(
      isinstance(v, np.ndarray) for v in state.values()):
    raise ValueError(f"{path}: expected a state_dict (a mapping from names to tensors); found "
                     f"{type(state).__name__}.")
  if state and all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return dict(state)
