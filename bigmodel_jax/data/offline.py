"""The base of this package's TFDS builders: data made on this machine, no download."""

import tensorflow_datasets as tfds


class OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes array_record by default, also when a data_dir is given (tfds.data_source forces it
  only without one), so that `tfds.data_source(name, data_dir=...)` reads what it prepared."""

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)
