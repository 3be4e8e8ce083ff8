"""Input pipeline (pipeline.py: one source module per data.kind), the offline TFDS builders (one
file each) and the token stores of language-model corpora (lm.py).

Importing this package registers the builders, so `tfds.data_source("mnist1d")` and
`tfds.data_source("digits")` (and digit_scenes, digit_captions: paired_digits.py; the user's own
images: image_folder) work exactly as for the catalogue's data sets.

`training_batches(config, start_step=0)` yields the global training batches a run of the config
trains on, in order, as numpy: to look at the data (a mixture's rows carry "source", the
corpus's index in name order).
"""

from collections.abc import Iterator
from typing import Any

import ml_collections

from bigmodel_jax import config as config_lib
from bigmodel_jax.data import (addition, digits, image_folder, mnist1d, paired_digits,  # noqa: F401
                               pycode)
from bigmodel_jax.data import pipeline, tasks


def training_batches(config: ml_collections.ConfigDict, start_step: int = 0
                     ) -> Iterator[dict[str, Any]]:
  """The global batches (every row, whatever the process count) of steps start_step .. the
  run's last, as the trainer reads them (tasks.load, pipeline.train_iterator): the same order,
  shuffling and mixture. Stores and tokenizers are prepared on first use, as a run would."""
  sources = tasks.load(config)
  total = config_lib.total_steps(config, len(sources.train))
  it = pipeline.train_iterator(sources.train, config.batch_size, config.seed, 0,
                               rows=slice(None))
  it.set_state({"next_index": start_step})
  try:
    for _ in range(start_step, total):
      yield next(it)
  finally:
    it.close()
