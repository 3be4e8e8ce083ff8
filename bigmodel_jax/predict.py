"""A model's outputs for inputs from a file: the way to check an imported checkpoint by hand and
to use a trained model from scripts.

  python -m bigmodel_jax.predict --workdir=W --inputs=FILE.npy --out=LOGITS.npy [--batch_size=64]

W is a trained workdir (its newest checkpoint) or one written by bigmodel_jax.convert. The
inputs are fed to the model as they are: images N x H x W x C float32 (no preprocessing: scale
and normalize them as the model expects), token ids N x L int32. The model runs in eval mode
(BatchNorm's running statistics, no dropout) in float32; the outputs (logits) are written as
float32 .npy.
"""

import os

import numpy as np
from absl import app, flags

from bigmodel_jax import cli
from bigmodel_jax.config import ConfigError


def read_inputs(path: str, token_ids: bool) -> np.ndarray:
  try:
    x = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ConfigError(f"--inputs {path}: cannot read it as a .npy array ({e})") from e
  if token_ids:
    if not np.issubdtype(x.dtype, np.integer) or x.ndim != 2:
      raise ConfigError(f"--inputs {path}: a language model takes token ids (N x L integers), "
                        f"got {x.dtype} {x.shape}")
    return x  # checked against the vocabulary, then int32 (predict)
  if not np.issubdtype(x.dtype, np.floating):
    raise ConfigError(f"--inputs {path}: this model takes float inputs (N x ...), got {x.dtype}")
  return x.astype(np.float32)


def predict(workdir: str, inputs: np.ndarray | str, batch_size: int = 64) -> np.ndarray:
  import jax

  from bigmodel_jax import convert, models

  config, model, variables = convert.load(workdir)
  if isinstance(inputs, str):
    inputs = read_inputs(inputs, config.data.kind == "lm")
  if config.data.kind == "lm":  # checked before int32, into which a larger id would wrap
    vocab = model.vocab_size
    if inputs.size and not 0 <= inputs.min() <= inputs.max() < vocab:
      raise ConfigError(f"--inputs: token ids must be in [0, {vocab}) (the model's vocabulary), "
                        f"got {inputs.min()} .. {inputs.max()}")
    inputs = inputs.astype(np.int32)
  if batch_size <= 0:
    raise ConfigError(f"--batch_size must be positive, got {batch_size}")
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  outs = []
  with models.init_errors_as_config_errors(config.model.name, inputs[:1]):
    for start in range(0, len(inputs), batch_size):
      outs.append(np.asarray(forward(variables, inputs[start:start + batch_size]), np.float32))
  return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def main(argv: list[str]) -> None:
  f = flags.FLAGS

  def body() -> None:
    if not f.out.endswith(".npy"):
      raise ConfigError(f"--out {f.out} must end in .npy")
    if os.path.abspath(f.out) == os.path.abspath(f.inputs):
      raise ConfigError(f"--out {f.out} is the --inputs file: choose another file to write")
    out = predict(f.workdir, f.inputs, f.batch_size)
    tmp = f"{f.out}.tmp{os.getpid()}.npy"
    np.save(tmp, out)
    os.replace(tmp, f.out)
    from bigmodel_jax import metrics
    metrics.console(f"Wrote {f.out}: {out.shape} float32")

  cli.run_command(argv, body)


def run() -> None:
  flags.DEFINE_string("workdir", None, "A trained or converted workdir.", required=True)
  flags.DEFINE_string("inputs", None, "A .npy file of inputs.", required=True)
  flags.DEFINE_string("out", None, "The .npy file to write.", required=True)
  flags.DEFINE_integer("batch_size", 64, "Inputs per forward pass.")
  app.run(main)


if __name__ == "__main__":
  run()
