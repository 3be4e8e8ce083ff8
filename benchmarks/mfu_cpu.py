"""Model FLOPs utilization of the pycode Transformer LM on this machine's CPU.

  .venv/bin/python benchmarks/mfu_cpu.py [--sizes=128x4,256x4,384x6,512x6] [--windows=2]

Peak: the best float32 matrix-product rate measured here (n x n x n for n in 1024, 2048, 3072,
2 n^3 FLOPs each), the ceiling a JAX program reaches on these cores. Each size (width x blocks;
heads of 64, MLP 4x width, rotary, tied embeddings, vocabulary 256, sequence 128, batch 32 as in
configs/pycode.py) trains through the trainer's jitted step (steps.jit_train_step, float32,
AdamW) on a fixed batch. FLOPs per step are counted two ways: the model's, tokens x (6 N + 6 x
blocks x width x seq_len) (N: all parameters; the attention term is the causal half of PaLM's
12 L d T), and XLA's cost analysis of the compiled step (which counts every operation, the
masked half of attention and the optimizer included). MFU = model FLOP/s / peak.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpu import compile_step, time_steps  # noqa: E402

from bigmodel_jax import config as config_lib  # noqa: E402


def peak_gflops(sizes=(1024, 2048, 3072), reps: int = 5) -> tuple[float, int]:
  """The best float32 n x n x n product rate over `sizes` (median of reps each)."""
  best = (0.0, 0)
  for n in sizes:
    a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.float32) for i in (0, 1))
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
      t = time.perf_counter()
      f(a, b).block_until_ready()
      times.append(time.perf_counter() - t)
    best = max(best, (2 * n**3 / float(np.median(times)) / 1e9, n))
  return best


def lm_config(dim: int, depth: int, batch: int, seq: int) -> ml_collections.ConfigDict:
  c = config_lib.load_config_file(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "configs", "pycode.py:transformer"))
  c.batch_size = batch
  c.model.update(dict(dim=dim, depth=depth, num_heads=max(dim // 64, 1), mlp_dim=4 * dim,
                      max_len=seq))
  return c


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sizes", default="128x4,256x4,384x6,512x6")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--windows", type=int, default=2)
  args = p.parse_args()
  peak, n_best = peak_gflops()
  print(f"peak: {peak:.1f} GFLOP/s (float32 {n_best}^3 product)", flush=True)
  rows = []
  for size in args.sizes.split(","):
    dim, depth = map(int, size.split("x"))
    c = lm_config(dim, depth, args.batch, args.seq)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (args.batch, args.seq + 1)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "label": tokens[:, 1:]}
    run = compile_step(c, 256, jnp.asarray(batch["inputs"][:1]), batch)
    sec = time_steps(run, warmup=1, steps_per_window=2 if dim >= 384 else 5, windows=args.windows)
    n = run["num_params"]
    tokens_per_step = args.batch * args.seq
    model_flops = tokens_per_step * (6 * n + 6 * depth * dim * args.seq)
    rows.append(dict(size=size, params=n, step_s=sec, tokens_per_s=tokens_per_step / sec,
                     model_gflops=model_flops / sec / 1e9, xla_gflops=run["xla_flops"] / sec / 1e9,
                     mfu=model_flops / sec / 1e9 / peak, compile_s=run["compile_s"]))
    r = rows[-1]
    print(f"{size}: {n:,} params, {sec:.3f} s/step, MFU {100 * r['mfu']:.1f}%", flush=True)
  print(f"\n{jax.devices()[0].device_kind}, {os.cpu_count()} cores, jax {jax.__version__}; "
        f"peak {peak:.1f} GFLOP/s (float32 {n_best}^3); batch {args.batch} x {args.seq} tokens")
  print("| width x blocks | parameters | s/step | tokens/s | model GFLOP/s | XLA GFLOP/s | "
        "MFU (of the measured matmul peak) | compile s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    print(f"| {r['size']} | {r['params']:,} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
          f"{r['model_gflops']:.1f} | {r['xla_gflops']:.1f} | {100 * r['mfu']:.1f}% | "
          f"{r['compile_s']:.1f} |")


if __name__ == "__main__":
  main()
