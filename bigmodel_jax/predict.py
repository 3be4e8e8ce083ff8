"""A model's outputs for inputs from a file: the way to check an imported checkpoint by hand and
to use a trained model from scripts. The work: inference/predict.py.

  python -m bigmodel_jax.predict --workdir=W --inputs=FILE.npy --out=LOGITS.npy [--batch_size=64]

W is a trained workdir (its newest checkpoint) or one written by bigmodel_jax.convert (or
quantize). The inputs are fed to the model as they are: images N x H x W x C float32 (no
preprocessing: scale and normalize them as the model expects), token ids N x L int32. The model
runs in eval mode (BatchNorm's running statistics, no dropout) in float32; the outputs (logits)
are written as float32 .npy.
"""

from absl import app, flags

from bigmodel_jax import cli, metrics
from bigmodel_jax.inference import predict


def main(argv: list[str]) -> None:
  f = flags.FLAGS

  def body() -> None:
    out = predict.to_file(f.workdir, f.inputs, f.out, f.batch_size)
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
