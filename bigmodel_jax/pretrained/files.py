"""Reading and writing other ecosystems' weight files, with numpy only (no torch).

- safetensors files (`*.safetensors`), read and written with the safetensors package;
- PyTorch `torch.save` files (`*.pth`, `*.pt`, `*.bin`: a zip of a pickle and raw storages),
  read by an unpickler that knows tensors, storages and dicts and refuses everything else, so a
  checkpoint cannot run code;
- Hugging Face model directories: config.json and model.safetensors (or its shards listed in
  model.safetensors.index.json, or pytorch_model.bin); tokenizer.json beside them if present.
"""

import collections
import json
import os
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from bigmodel_jax.faults import ConfigError

Tensors = dict[str, np.ndarray]

_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64,
             "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
             "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _Storage:
  def __init__(self, name: str):
    self.dtype = np.dtype(_STORAGES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *unused: Any) -> np.ndarray:
  item = storage.itemsize
  return np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * item for s in stride)).copy()


class _TorchUnpickler(pickle.Unpickler):
  def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self.archive, self.prefix = archive, prefix

  def find_class(self, module: str, name: str) -> Any:
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return lambda data, *unused: data
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch" and name in _STORAGES:
      return _Storage(name)
    raise pickle.UnpicklingError(f"{module}.{name} is not part of a state_dict of tensors")

  def persistent_load(self, pid: Any) -> np.ndarray:
    kind, storage, key, _, numel = pid
    if kind != "storage" or not isinstance(storage, _Storage):
      raise pickle.UnpicklingError(f"unknown persistent object {kind}")
    data = self.archive.read(f"{self.prefix}/data/{key}")
    return np.frombuffer(data, storage.dtype, count=numel)


def read_torch(path: str) -> Tensors:
  """A torch.save'd state_dict (zip format, torch >= 1.6) as numpy arrays."""
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
      if pkl is None:
        raise ConfigError(f"{path}: not a torch.save zip file (no data.pkl)")
      with archive.open(pkl) as f:
        obj = _TorchUnpickler(f, archive, pkl[:-len("/data.pkl")]).load()
  except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
    raise ConfigError(f"{path}: cannot read it as a PyTorch state_dict: {e}") from e
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]  # a training checkpoint that wraps its state_dict
  if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
    raise ConfigError(f"{path}: not a state_dict (a dict of tensor names to tensors)")
  return dict(obj)


def read_safetensors(path: str) -> Tensors:
  from safetensors import SafetensorError
  from safetensors.numpy import load_file
  try:
    return load_file(path)
  except (SafetensorError, OSError, ValueError) as e:
    raise ConfigError(f"{path}: cannot read it as safetensors: {e}") from e


def write_safetensors(path: str, tensors: Tensors, metadata: dict[str, str] | None = None) -> None:
  from safetensors.numpy import save_file
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata=metadata)
  umask = os.umask(0)  # safetensors creates the file 0600: give it a plain file's mode
  os.umask(umask)
  os.chmod(path, 0o666 & ~umask)


def read_hf_config(directory: str) -> dict[str, Any]:
  path = os.path.join(directory, "config.json")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: a Hugging Face model directory needs a readable config.json "
                      f"({e})") from e


def read(source: str) -> tuple[Tensors, dict[str, Any] | None]:
  """(tensors, the Hugging Face config.json or None) of a file or model directory."""
  if os.path.isdir(source):
    config = read_hf_config(source)
    index = os.path.join(source, "model.safetensors.index.json")
    if os.path.exists(os.path.join(source, "model.safetensors")):
      return read_safetensors(os.path.join(source, "model.safetensors")), config
    if os.path.exists(index):
      with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
      tensors = {}
      for shard in shards:
        tensors.update(read_safetensors(os.path.join(source, shard)))
      return tensors, config
    if os.path.exists(os.path.join(source, "pytorch_model.bin")):
      return read_torch(os.path.join(source, "pytorch_model.bin")), config
    raise ConfigError(f"{source}: no model.safetensors, model.safetensors.index.json or "
                      f"pytorch_model.bin in this Hugging Face model directory")
  if not os.path.isfile(source):
    raise ConfigError(f"--source {source} does not exist")
  if source.endswith(".safetensors"):
    return read_safetensors(source), None
  if zipfile.is_zipfile(source):
    return read_torch(source), None
  raise ConfigError(f"--source {source}: not a safetensors file, a torch.save zip file or a "
                    f"Hugging Face model directory")
