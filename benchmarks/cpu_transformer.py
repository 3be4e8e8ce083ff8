"""The pycode Transformer's training step on this CPU: the trainer's jitted step against the same
network written nanoGPT-style in PyTorch eager, side by side in one run.

  .venv/bin/python benchmarks/cpu_transformer.py --torch_python=/tmp/refenv/bin/python
      [--seconds=10] [--rounds=3] [--xla_flags="--xla_cpu_... ..."]

The shape (issue 20): width 128, 4 pre-LN blocks, 4 heads, MLP 512 (GELU, tanh approximation),
learned positions, tied embeddings, 256 byte tokens: 842,496 parameters; batch 32 x 128; AdamW
(weight decay 0.1) with gradient clipping at 1.0; float32. JAX: configs/pycode.py:transformer
with model.positions=learned, the trainer's build and jitted step (steps.jit_train_step) on one
CPU device, on batches already placed (the input pipeline is measured elsewhere). PyTorch:
eager, torch.set_num_threads(cores), scaled_dot_product_attention(is_causal=True), fused AdamW
off (foreach on, its CPU default). Each side runs in its own process, alternating, --rounds
times; the median steps/s of each is reported, and their ratio. This VM's neighbours slow either
side by up to ~15% in a round, so each side also times windows of 5 steps and reports its best
(best_window_ratio: the best window of each side over all rounds; the same statistic on both
sides). Both sides get random tokens of the same shape (the pipeline's cost is not in either
number).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JAX_SIDE = r"""
import json, sys, time
sys.path.insert(0, ROOT + "/benchmarks")
import jax
from bigmodel_jax.trainer import state as state_lib
from cpu_transformer import jax_step
seconds = float(sys.argv[1])
step, state, batches = jax_step(4)
for i in range(3):
  state, m = step(state, batches[i % 4])
jax.block_until_ready(state)
n, t, windows = 0, time.perf_counter(), []
while time.perf_counter() - t < seconds:
  w = time.perf_counter()
  for _ in range(5):
    state, m = step(state, batches[n % 4])
    n += 1
  jax.block_until_ready(state)
  windows.append(5 / (time.perf_counter() - w))
print(json.dumps({"steps_per_sec": n / (time.perf_counter() - t), "best_window": max(windows),
                  "params": state_lib.num_params(state.params)}))
"""

def jax_step(batches: int):
  """The issue's shape through the trainer (configs/pycode.py:transformer, learned positions): its
  jitted train step on this process's devices, the initial state, and `batches` batches of random
  tokens placed as the step expects them."""
  sys.path.insert(0, ROOT)
  import jax
  import numpy as np

  from bigmodel_jax.trainer import build as build_lib, steps
  from bigmodel_jax import config as config_lib
  c = config_lib.load_config_file(ROOT + "/configs/pycode.py:transformer")
  c.model.positions = "learned"
  b = build_lib.build(c, jax.numpy.zeros((1, 128), jax.numpy.int32), 256, 10**6)
  state, shardings = b.create_state(0)
  step = steps.jit_train_step(b.plan, shardings, **b.step_options)
  rng = np.random.default_rng(0)
  placed = [jax.device_put({"inputs": rng.integers(0, 256, (32, 128), np.int32),
                            "label": rng.integers(0, 256, (32, 128), np.int32)},
                           b.plan.batch_sharding) for _ in range(batches)]
  return step, state, placed


TORCH_SIDE = r"""
import json, math, os, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
seconds = float(sys.argv[1])
torch.set_num_threads(os.cpu_count())
torch.manual_seed(0)
D, L, H, MLP, DEPTH, V, B = 128, 128, 4, 512, 4, 256, 32

class Block(nn.Module):
  def __init__(self):
    super().__init__()
    self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
    self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
    self.up, self.down = nn.Linear(D, MLP), nn.Linear(MLP, D)
  def forward(self, x):
    q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
    q, k, v = (t.view(B, L, H, D // H).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + self.proj(y.transpose(1, 2).reshape(B, L, D))
    return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))

class GPT(nn.Module):
  def __init__(self):
    super().__init__()
    self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(L, D)
    self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
    self.ln = nn.LayerNorm(D)
  def forward(self, idx):
    x = self.tok(idx) + self.pos(torch.arange(L))
    for blk in self.blocks:
      x = blk(x)
    return self.ln(x) @ self.tok.weight.T  # tied

model = GPT()
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
data = [(torch.randint(0, V, (B, L)), torch.randint(0, V, (B, L))) for _ in range(4)]
def step(i):
  x, y = data[i % 4]
  loss = F.cross_entropy(model(x).view(-1, V), y.view(-1))
  opt.zero_grad(set_to_none=True)
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
  opt.step()
for i in range(3):
  step(i)
n, t, windows = 0, time.perf_counter(), []
while time.perf_counter() - t < seconds:
  w = time.perf_counter()
  for _ in range(5):
    step(n)
    n += 1
  windows.append(5 / (time.perf_counter() - w))
print(json.dumps({"steps_per_sec": n / (time.perf_counter() - t), "best_window": max(windows),
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def run(python: str, code: str, arg: str, env: dict[str, str]) -> dict:
  """Runs `python -c CODE ARG` (ROOT in CODE: the repository) in the repository; its last output
  line, a JSON object."""
  out = subprocess.run([python, "-c", code.replace("ROOT", repr(ROOT), 2), arg],
                       capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT)
  if out.returncode:
    raise RuntimeError(f"{python}: {out.stderr.strip()[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--torch_python", default="")
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--xla_flags", default=None, help="XLA_FLAGS of the JAX side (default: "
                 "bigmodel_jax's own, as the trainer sets them)")
  args = p.parse_args()
  env = {"JAX_PLATFORMS": "cpu"}
  if args.xla_flags is not None:
    env["XLA_FLAGS"] = args.xla_flags
  rates: dict[str, list[float]] = {"jax": [], "torch": []}
  best: dict[str, list[float]] = {"jax": [], "torch": []}
  params = {}
  for _ in range(args.rounds):
    sides = [("jax", sys.executable, JAX_SIDE, env)]
    if args.torch_python:
      sides.append(("torch", args.torch_python, TORCH_SIDE, {}))
    for side, python, code, side_env in sides:
      r = run(python, code, str(args.seconds), side_env)
      rates[side].append(round(r["steps_per_sec"], 3))
      best[side].append(round(r["best_window"], 3))
      params[side] = r["params"]
  jax_rate = statistics.median(rates["jax"])
  row = {"jax_steps_per_sec": round(jax_rate, 3), "rounds": rates, "best_windows": best,
         "params": params, "xla_flags": args.xla_flags}
  if rates["torch"]:
    torch_rate = statistics.median(rates["torch"])
    row.update(torch_steps_per_sec=round(torch_rate, 3), ratio=round(jax_rate / torch_rate, 3),
               best_window_ratio=round(max(best["jax"]) / max(best["torch"]), 3))
  print(json.dumps(row))


if __name__ == "__main__":
  main()
