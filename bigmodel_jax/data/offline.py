"""The base of this package's TFDS builders: data made on this machine, no download."""

import importlib.metadata
import os
import platform

import tensorflow_datasets as tfds

from bigmodel_jax import storage
from bigmodel_jax.faults import ConfigError


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes array_record by default, also when a data_dir is given (tfds.data_source forces it
  only without one), so that `tfds.data_source(name, data_dir=...)` reads what it prepared."""

  def __init_subclass__(cls, **kwargs):
    # A builder's module run as a command (python -m bigmodel_jax.data.image_folder) defines its
    # class again as __main__.X; importing the package registered the name already.
    kwargs.setdefault("skip_registration", cls.__module__ == "__main__")
    super().__init_subclass__(**kwargs)

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)


def generated_with(*packages: str) -> dict[str, str]:
  """What made a data set here, for its metadata ("generated_with"): the versions of the packages
  that computed it, Python's, and the machine. Data computed in floating point is bit-identical
  only for the same versions on the same kind of CPU (numpy picks SIMD kernels per CPU)."""
  out = {name: importlib.metadata.version(name) for name in packages}
  return {**out, "python": platform.python_version(), "machine": platform.machine(),
          "processor": platform.processor() or "unknown"}


def user_directory(directory: str, name: str, key: str, what: str) -> str:
  """The absolute path of the directory a data set of the user's files reads (config key
  data.KEY; a gs:// URL: its copy in this machine's cache), or a ConfigError that says what to
  give."""
  if not directory:
    raise ConfigError(f"data set {name} reads data.{key}: set it to {what}")
  if not storage.isdir(directory):
    raise ConfigError(f"data.{key} {directory} is not a directory")
  if storage.is_remote(directory):  # the builders read local files: this host's copy
    return storage.mirror(directory)
  return os.path.abspath(directory)
