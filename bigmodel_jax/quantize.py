"""Post-training quantization of a trained workdir, and export of a LoRA run as plain weights.

  python -m bigmodel_jax.quantize --workdir=runs/digits_resnet --out=runs/digits_resnet_int8
      [--weight_bits=8] [--act_bits=0] [--modules=.*] [--calibration_examples=512]

Reads WORKDIR's newest checkpoint (a LoRA run's adapters merged into its kernels first), rounds
every kernel matching --modules to --weight_bits (8 or 4; 0 keeps float32: a LoRA export), and
with --act_bits=8 every layer's input too, with static scales from calibration batches of the
training split (compression/ptq.py). Evaluates the result on the eval split and writes OUT:
config.json (the model as evaluated: no QAT, no adapters), quantized/ (an Orbax checkpoint of
{"params", "model_state"} whose quantized kernels are {"qvalue": int8 or packed int4, "scale"})
and results.json (the eval metrics, model_bytes, float_model_bytes, disk_bytes,
eval_examples_per_sec, ...). OUT is written whole or not at all; WORKDIR is only read. The
work: inference/quantize.py.
"""

from absl import app, flags

from bigmodel_jax import cli, metrics
from bigmodel_jax.inference import quantize


def main(argv: list[str]) -> None:
  f = flags.FLAGS

  def body() -> None:
    results = quantize.quantize_workdir(f.workdir, f.out, f.weight_bits, f.act_bits,
                                        f.modules, f.calibration_examples)
    metrics.console(f"Wrote {f.out}: " + ", ".join(
        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in results.items()
        if k.startswith("eval/") or k.endswith("bytes") or k == "eval_examples_per_sec"))

  cli.run_command(argv, body)


def run() -> None:
  flags.DEFINE_string("workdir", None, "A trained classifier's or language model's workdir.",
                      required=True)
  flags.DEFINE_string("out", None, "The new directory to write.", required=True)
  flags.DEFINE_integer("weight_bits", 8, "4 or 8; 0 = float32 (export a LoRA run merged).")
  flags.DEFINE_integer("act_bits", 0, "0 or 8: layer inputs too, with calibrated static scales.")
  flags.DEFINE_string("modules", ".*", "A regex searched in parameter paths: the kernels quantized.")
  flags.DEFINE_integer("calibration_examples", 512, "Training examples that set activation scales.")
  app.run(main)


if __name__ == "__main__":
  run()
