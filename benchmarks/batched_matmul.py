"""Attention's batched matrix products on this CPU: XLA:CPU (jax.jit) against PyTorch's bmm, on
one and on two cores, side by side in one run.

  .venv/bin/python benchmarks/batched_matmul.py [--torch_python=/tmp/refenv/bin/python]

The shapes are the pycode Transformer's attention (benchmarks/cpu_transformer.py): 32 x 4 =
128 (batch x head) products of 128 x 32 by 32 x 128 (q k^T, 67 MFLOP) and of 128 x 128 by
128 x 32 (p v, 67 MFLOP). Each side and core count runs in its own process (pinned with
sched_setaffinity before the library starts its threads), min over 6 windows of 10 calls.
Prints one line per (library, cores, product) and a JSON line.
"""

import argparse
import json
import os
import sys

from cpu_transformer import run  # runs a side's code in its own process

JAX_SIDE = r"""
import time, jax, jax.numpy as jnp, numpy as np
r = np.random.default_rng(0).standard_normal
q, k = jnp.asarray(r((32, 4, 128, 32)), jnp.float32), jnp.asarray(r((32, 4, 128, 32)), jnp.float32)
p = jnp.asarray(r((32, 4, 128, 128)), jnp.float32)
products = {"qk": (jax.jit(lambda q, k: jnp.einsum("bnlh,bnsh->bnls", q, k)), (q, k)),
            "pv": (jax.jit(lambda p, v: jnp.einsum("bnls,bnsh->bnlh", p, v)), (p, k))}
"""

TORCH_SIDE = r"""
import time, os, torch
torch.set_num_threads(len(os.sched_getaffinity(0)))
q, k, p = torch.randn(128, 128, 32), torch.randn(128, 32, 128), torch.randn(128, 128, 128)
v = torch.randn(128, 128, 32)
products = {"qk": (torch.bmm, (q, k)), "pv": (torch.bmm, (p, v))}
"""

TIMER = r"""
import json
out = {}
for name, (f, args) in products.items():
  for _ in range(3):
    r = f(*args)
  getattr(r, "block_until_ready", lambda: None)()
  best = float("inf")
  for _ in range(6):
    t = time.perf_counter()
    for _ in range(10):
      r = f(*args)
    getattr(r, "block_until_ready", lambda: None)()
    best = min(best, (time.perf_counter() - t) / 10)
  out[name] = best * 1e3
print(json.dumps(out))
"""

PIN = ("import os, sys\n"
       "os.sched_setaffinity(0, set(list(os.sched_getaffinity(0))[:int(sys.argv[1])]))\n")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--torch_python", default="")
  args = p.parse_args()
  sides = [("jax", sys.executable, JAX_SIDE)]
  if args.torch_python:
    sides.append(("torch", args.torch_python, TORCH_SIDE))
  gflop = 2 * 128 * 128 * 128 * 32 / 1e9
  row = {}
  for cores in sorted({1, len(os.sched_getaffinity(0))}):
    for side, python, code in sides:
      times = run(python, PIN + code + TIMER, str(cores), {"JAX_PLATFORMS": "cpu"})
      for name, ms in times.items():
        row[f"{side}/{cores}core/{name}_ms"] = round(ms, 3)
        print(f"{side:5s} {cores} core(s) {name}: {ms:6.2f} ms  {gflop / ms * 1e3:6.1f} GFLOP/s")
  print(json.dumps(row))


if __name__ == "__main__":
  main()
