"""Pretrained weights in and out: other ecosystems' checkpoints as workdirs, and back.

  python -m bigmodel_jax.convert --source=HF_DIR --workdir=W [--config=configs/FILE.py:VARIANT]
  python -m bigmodel_jax.convert --source=PATH --config=configs/FILE.py:VARIANT --workdir=W
  python -m bigmodel_jax.convert --workdir=W --to=hf|torchvision --out=DIR

In: PATH is a torchvision state_dict (torch.save file, read without torch), a safetensors file or
a Hugging Face model directory (config.json + model.safetensors; gpt2, llama, mixtral). W becomes
a workdir of converted weights: config.json, checkpoints/0 (parameters and BatchNorm statistics),
convert.json (what was mapped, the architecture) and the directory's tokenizer (tokenizer.model
or tokenizer.json) if it has one. The checkpoint gives the architecture: a Hugging Face
directory's config.json every model option (no --config needed), a torchvision state_dict its
shapes (depth, widths, groups, ...; --config names the family and the data); the config gives
the rest, and the console lists each model option taken from the checkpoint over the config's.
An option our model cannot represent, or a shape the config's data does not fit, is a one-line
error naming it, and nothing is written. Fine-tune with --config.init_from=W (the run takes W's
architecture and tokenizer too); `predict` computes its outputs.

Out: DIR gets model.safetensors under the other ecosystem's names (torchvision: load it with
`model.load_state_dict(safetensors.torch.load_file(...))`; hf: with config.json, the directory
that `AutoModelForCausalLM.from_pretrained(DIR)` loads), and W's tokenizer.json if any.
The work: pretrained/convert.py.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from bigmodel_jax import cli, metrics
from bigmodel_jax import config as config_lib
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.pretrained import convert


def main(argv: list[str]) -> None:
  f = flags.FLAGS

  def body() -> None:
    if f.to and f.source:
      raise ConfigError("use one of --source (a checkpoint to convert into --workdir) or --to "
                        "(export --workdir to --out), not both")
    if f.to:
      done = convert.convert_out(f.workdir, f.to, f.out)
      metrics.console(f"Wrote {f.out}: {done['tensors']} tensors ({done['family']}, {f.to})")
      return
    if not f.source:
      raise ConfigError("converting in needs --source (or --to to export)")
    if f.config is not None:
      config_lib.check_values(f.config)
    r = convert.convert_in(f.source, f.config, f.workdir)
    if f.config is None:
      metrics.console(f"Model options from the checkpoint: {len(r['architecture'])} "
                      f"(convert.json's architecture)")
    elif r["taken"]:
      metrics.console(f"Taken from the checkpoint over the config: {', '.join(r['taken'])}")
    metrics.console(
        f"Converted {r['source']} ({r['family']}) into {f.workdir}: {len(r['mapped'])} "
        f"tensors mapped, {len(r['ignored'])} ignored ({', '.join(r['ignored'][:3]) or 'none'}"
        f"{' ...' if len(r['ignored']) > 3 else ''}), {len(r['left_over'])} left over "
        f"({', '.join(r['left_over']) or 'none'}), 0 missing")

  cli.run_command(argv, body)


def run() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment file (training settings; the "
                                  "checkpoint gives the architecture).", lock_config=True)
  flags.DEFINE_string("source", None, "A checkpoint file or Hugging Face directory.")
  flags.DEFINE_string("workdir", None, "The workdir to write (in) or read (out).", required=True)
  flags.DEFINE_enum("to", None, ["hf", "torchvision"], "Export W to this ecosystem.")
  flags.DEFINE_string("out", None, "--to: the new directory to write.")
  flags.DEFINE_bool("traceback", False, "Show the full traceback of an error.")
  app.run(main, flags_parser=_parse)


def _parse(argv: list[str]) -> list[str]:
  if any(a.startswith("--config") for a in argv):
    return cli.parse_command_line(argv)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
