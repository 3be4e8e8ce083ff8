"""The compression table: every workdir of configs/paper/compression.py's sweep exported or
quantized with bigmodel_jax.quantize, then one row per method and model.

  python benchmarks/compression_table.py [--root=runs/paper_compression] [--out=benchmarks/compression.md]

Per training workdir (ROOT/arg=MODEL_ROW,seed=S...), into ROOT/exports/ (kept: a rerun only
does what is missing):
  float, pruned, student, distilled, LoRA rows: --weight_bits=0 (float32; LoRA merged);
  QAT rows: their own bits (the integers the QAT model was trained to be rounded to);
  the float rows again with --weight_bits=8 (PTQ int8), --weight_bits=8 --act_bits=8 and
  --weight_bits=4 (PTQ int4).
Columns: the eval metric (accuracy, or bits per byte for the LM) of the exported model, mean +-
sample std over seeds; for QAT also the QAT run's own eval (weights rounded by qwix in the
forward pass); parameter bytes (integers + scales + float parameters) and bytes on disk (the
Orbax directory, with its metadata); eval examples per second of the exported model, median over
seeds (the float kernels run: the weights are dequantized at load, so int8 does not run faster
on this CPU); parameters and trainable parameters (LoRA: the adapters). Eval speed is taken one
export at a time: run it while the machine does nothing else.
"""

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigmodel_jax.inference import quantize  # noqa: E402

ROWS = [  # (label, training row, quantize options)
    ("float32", "float", dict(weight_bits=0)),
    ("PTQ int8", "float", dict(weight_bits=8)),
    ("PTQ int8, int8 activations", "float", dict(weight_bits=8, act_bits=8)),
    ("PTQ int4", "float", dict(weight_bits=4)),
    ("QAT int8", "qat8", dict(weight_bits=8)),
    ("QAT int4", "qat4", dict(weight_bits=4)),
    ("pruned 50%", "prune50", dict(weight_bits=0)),
    ("pruned 80%", "prune80", dict(weight_bits=0)),
    ("pruned 90%", "prune90", dict(weight_bits=0)),
    ("student alone (~1/2 size)", "student", dict(weight_bits=0)),
    ("student distilled", "distill", dict(weight_bits=0)),
    ("LoRA fine-tune (rank 4, merged)", "lora", dict(weight_bits=0)),
]
MODELS = {"resnet": "digits ResNet", "cnn": "MNIST-1D CNN", "lm": "pycode Transformer LM"}


def _workdirs(root: str) -> dict[tuple[str, str], list[str]]:
  """(model, row) -> finished workdirs, by seed."""
  out = defaultdict(list)
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if name.startswith("arg=") and os.path.isfile(os.path.join(path, "results.json")):
      model, _, row = name[4:].split(",")[0].partition("_")
      out[model, row].append(path)
  return out


def _export(workdir: str, root: str, options: dict) -> dict:
  tag = f"w{options['weight_bits']}" + (f"a{options['act_bits']}" if options.get("act_bits") else "")
  out = os.path.join(root, "exports", f"{os.path.basename(workdir)}.{tag}")
  if not os.path.isfile(os.path.join(out, "results.json")):
    print(f"quantize {workdir} {options}", flush=True)
    quantize.quantize_workdir(workdir, out, **options)
  with open(os.path.join(out, "results.json")) as f:
    return json.load(f)


def _mean_std(values: list[float], digits: int) -> str:
  if not values:
    return "-"
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}" + (
      f" ({len(values)} seed{'s' if len(values) > 1 else ''})" if len(values) != 3 else "")


def table(root: str) -> str:
  runs = _workdirs(root)
  lines = []
  for model, title in MODELS.items():
    if not any(m == model for m, _ in runs):
      continue
    metric = "eval/bits_per_byte" if model == "lm" else "eval/accuracy"
    short = "bits per byte" if model == "lm" else "test accuracy"
    lines += [f"### {title}", "", f"| method | {short} | the trained run's own | parameter bytes "
              "| on disk | eval examples/s | parameters | trainable |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, row, options in ROWS:
      workdirs = runs.get((model, row), [])
      if not workdirs:
        continue
      exported = [_export(w, root, options) for w in workdirs]
      trained = [json.load(open(os.path.join(w, "results.json"))) for w in workdirs]
      own = _mean_std([t[metric] for t in trained], 4) if row.startswith("qat") else ""
      lines.append(
          f"| {label} | {_mean_std([e[metric] for e in exported], 4)} | {own} | "
          f"{exported[0]['model_bytes']:,} | {exported[0]['disk_bytes']:,} | "
          f"{statistics.median(e['eval_examples_per_sec'] for e in exported):,.0f} | "
          f"{exported[0]['num_params']:,} | {trained[0]['trainable_params']:,} |")
    lines.append("")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", default="runs/paper_compression")
  p.add_argument("--out", default="", help="also write the table to this file")
  a = p.parse_args()
  text = table(a.root)
  print(text)
  if a.out:
    with open(a.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
