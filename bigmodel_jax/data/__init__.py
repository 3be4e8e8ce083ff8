"""Input pipeline (pipeline.py) and the offline TFDS builders (one file each).

Importing this package registers the builders, so `tfds.data_source("mnist1d")` and
`tfds.data_source("digits")` (and digit_scenes, digit_captions: paired_digits.py; the user's own
files: textdir, image_folder) work exactly as for the catalogue's data sets.
"""

from bigmodel_jax.data import (addition, digits, image_folder, mnist1d, paired_digits, pycode,
                               textdir)
