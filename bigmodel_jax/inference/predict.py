"""A model's outputs for inputs as given: the way to check an imported checkpoint by hand and to
use a trained model from scripts (`python -m bigmodel_jax.predict`).

The workdir is read by runs/load.py (a trained run's newest checkpoint, a converted or a
quantized one). The inputs are fed to the model as they are: images N x H x W x C float32 (no
preprocessing), token ids N x L (checked against the vocabulary). The model runs in eval mode
(BatchNorm's running statistics, no dropout) in float32; the outputs are float32.
"""


import io
import jax
import numpy as np

from bigmodel_jax import models, storage
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.runs import load


def read_inputs(path: str, token_ids: bool) -> np.ndarray:
  try:
    x = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ConfigError(f"--inputs {path}: cannot read it as a .npy array ({e})") from e
  if token_ids:
    if not np.issubdtype(x.dtype, np.integer) or x.ndim != 2:
      raise ConfigError(f"--inputs {path}: a language model takes token ids (N x L integers), "
                        f"got {x.dtype} {x.shape}")
    return x  # checked against the vocabulary, then int32 (outputs)
  if not np.issubdtype(x.dtype, np.floating):
    raise ConfigError(f"--inputs {path}: this model takes float inputs (N x ...), got {x.dtype}")
  return x.astype(np.float32)


def outputs(workdir: str, inputs: np.ndarray | str, batch_size: int = 64) -> np.ndarray:
  """The model's outputs (logits) for `inputs` (an array, or a .npy file's path)."""
  run = load.load(workdir)
  lm = run.config.data.kind == "lm"
  if isinstance(inputs, str):
    inputs = read_inputs(inputs, lm)
  if lm:  # checked before int32, into which a larger id would wrap
    vocab = run.model.vocab_size
    if inputs.size and not 0 <= inputs.min() <= inputs.max() < vocab:
      raise ConfigError(f"--inputs: token ids must be in [0, {vocab}) (the model's vocabulary), "
                        f"got {inputs.min()} .. {inputs.max()}")
    inputs = inputs.astype(np.int32)
  if batch_size <= 0:
    raise ConfigError(f"--batch_size must be positive, got {batch_size}")
  forward = jax.jit(lambda v, x: run.model.apply(v, x, train=False))
  outs = []
  with models.init_errors_as_config_errors(run.config.model.name, inputs[:1]):
    for start in range(0, len(inputs), batch_size):
      outs.append(np.asarray(forward(run.variables, inputs[start:start + batch_size]),
                             np.float32))
  return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def to_file(workdir: str, inputs: str, out: str, batch_size: int = 64) -> np.ndarray:
  """outputs() of a .npy file's inputs written to `out` (.npy, not the inputs' file), whole or
  not at all; returns them."""
  if not out.endswith(".npy"):
    raise ConfigError(f"--out {out} must end in .npy")
  storage.check_bucket(out, "--out")
  if storage.absolute(out) == storage.absolute(inputs):
    raise ConfigError(f"--out {out} is the --inputs file: choose another file to write")
  result = outputs(workdir, inputs, batch_size)
  npy = io.BytesIO()
  np.save(npy, result)
  storage.write(out, npy.getvalue())
  return result
