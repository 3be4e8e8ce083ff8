"""Short runs of nine configs on 8 CPU devices, each run's params_sha256 and every logged loss
as one JSON object: run it on two trees (before and after a refactor) and compare the files.

  .venv/bin/python benchmarks/same_runs.py OUT.json [--only=NAME,...]

The runs: the MNIST-1D CNN, the digits ResNet with gradient accumulation, pmap in bfloat16, K=3
updates per call with the data on the devices, the seq2seq and pycode Transformers, a VAE (its
samples scored by the pinned judge), the SigLIP dual encoder and QAT int8, each a few dozen
steps in a process of its own (main, as a user runs it).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--config.log_every=4", "--config.eval_every=12", "--config.checkpoint_every=12",
         "--config.total_steps=12"]
RUNS = {
    "cnn": ["--config=configs/mnist1d.py:cnn", "--config.batch_size=64"],
    "resnet_accumulation": ["--config=configs/digits.py:resnet", "--config.batch_size=32",
                            "--config.grad_accum_steps=2", "--config.schedule.warmup_steps=2"],
    "pmap_bfloat16": ["--config=configs/mnist1d.py:mlp", "--config.batch_size=64",
                      "--config.parallel.strategy=pmap", "--config.dtype=bfloat16"],
    "k3_on_device": ["--config=configs/digits.py:mlp", "--config.batch_size=64",
                     "--config.steps_per_call=3", "--config.data.cache=True",
                     "--config.data.on_device=True", "--config.schedule.warmup_steps=2",
                     "--config.log_every=6"],
    "seq2seq": ["--config=configs/seq2seq.py:transformer", "--config.batch_size=32",
                "--config.eval_batch_size=1000", "--config.schedule.warmup_steps=2"],
    "lm": ["--config=configs/pycode.py:transformer", "--config.batch_size=16",
           "--config.schedule.warmup_steps=2"],
    "vae": ["--config=configs/generative.py:vae", "--config.batch_size=64",
            "--config.samples.per_class=10"],
    "siglip": ["--config=configs/multimodal.py:siglip", "--config.batch_size=64",
               "--config.schedule.warmup_steps=2"],
    "qat8": ["--config=configs/mnist1d.py:mlp", "--config.batch_size=64",
             "--config.quantization.weight_bits=8"],
}


def run(name: str, root: str) -> dict:
  workdir = os.path.join(root, name)
  config, *overrides = RUNS[name]  # --config first: config_flags wants it before overrides
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.main", config, *SHORT, *overrides,
                         f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
                             "JAX_PLATFORMS": "cpu"})
  if proc.returncode:
    return {"error": proc.stderr.strip()[-500:]}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  return {"params_sha256": results["params_sha256"],
          "losses": {row["step"]: {k: v for k, v in row.items() if k.endswith("loss")}
                     for row in rows}}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("out")
  p.add_argument("--only", default="")
  args = p.parse_args()
  names = args.only.split(",") if args.only else list(RUNS)
  with tempfile.TemporaryDirectory() as root:
    out = {}
    for name in names:
      out[name] = run(name, root)
      print(name, out[name].get("params_sha256") or out[name]["error"], flush=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
  main()
