"""Per-device memory of the sharding presets, from --dry_run on N virtual CPU devices.

  .venv/bin/python benchmarks/memory.py [--config=configs/pycode.py:transformer] [--devices=8]

State bytes (parameters, optimizer state) come from the arrays' shardings and are exact;
temporaries and peak are XLA's CPU memory analysis of the compiled step.
"""

import argparse
import json
import subprocess
import sys


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--config", default="configs/pycode.py:transformer")
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--presets", default="dp,fsdp,tp,fsdp_tp")
  args = parser.parse_args()
  code = (
      "import sys, json, os;"
      f"os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count={args.devices}';"
      "os.environ['JAX_PLATFORMS'] = 'cpu';"
      "from bigmodel_jax.trainer import planning; from bigmodel_jax.config import load_config_file;"
      "c = load_config_file(sys.argv[1]); c.sharding = sys.argv[2];"
      "print(json.dumps(planning.dry_run(c)))")
  mib = lambda b: f"{b / 2**20:.2f}"  # noqa: E731
  print("| preset | mesh | parameters MiB | optimizer state MiB | temporaries MiB | peak MiB |")
  print("| --- | --- | --- | --- | --- | --- |")
  for preset in args.presets.split(","):
    out = subprocess.run([sys.executable, "-c", code, args.config, preset], capture_output=True,
                         text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    print(f"| {preset} | {r['mesh']} | {mib(r['params_bytes'])} | {mib(r['opt_state_bytes'])} | "
          f"{mib(r['temp_bytes'])} | {mib(r['peak_bytes'])} |")


if __name__ == "__main__":
  main()
