"""Seconds to the first step for each model family's default config (offline data sets).

  .venv/bin/python benchmarks/compile_time.py [--configs=configs/mnist1d.py:cnn,...]

Each config runs through train.train_and_evaluate for 2 steps in a fresh workdir, in a fresh
process (so nothing is cached in memory; the data sets are prepared beforehand), with JAX's
persistent compilation cache off. "first step" is results.json's time_to_first_step_s: from the
call to the end of the first step (data loading, model and sharded state creation, compiling the
train step, running it). "compile" is XLA's part of it, from the train step's lowering and
compilation (jax.stages), measured again in the same process. Target (issue 7): first step
under 30 s for the CPU configs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ",".join(f"configs/{c}" for c in (
    "mnist1d.py:mlp", "mnist1d.py:cnn", "mnist1d.py:resnet", "mnist1d.py:gru", "mnist1d.py:lstm",
    "mnist1d.py:transformer", "digits.py:vit", "pycode.py:transformer", "pycode.py:lstm",
    "seq2seq.py:transformer", "seq2seq.py:lstm"))

CHILD = r"""
import json, sys, tempfile, time
sys.path.insert(0, {repo!r})
import jax
from bigmodel_jax import config as config_lib
from bigmodel_jax.trainer import build as build_lib, steps, train
from bigmodel_jax.data import tasks
c = config_lib.load_config_file({name!r})
c.total_steps, c.total_epochs, c.log_every = 2, None, 1
c.eval_every = c.checkpoint_every = 1000
c.schedule.warmup_steps = min(c.schedule.warmup_steps, 1)
with tempfile.TemporaryDirectory() as w:
  r = train.train_and_evaluate(c, w) if {run!r} else {{}}
# XLA's part: lower + compile the same step again in this process (caches bypassed by a new jit)
sources = tasks.load(c)
import numpy as np, jax.numpy as jnp
b = build_lib.build(c, build_lib.example_of(sources.train), sources.num_outputs, 2)
plan = b.plan
state, sh = b.create_state(0)
step = steps.jit_train_step(plan, sh, **b.step_options)
batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=plan.batch_sharding),
                     sources.train.gather(np.arange(c.batch_size)))
t = time.perf_counter()
lowered = step.lower(state, batch)
t_lower = time.perf_counter() - t
lowered.compile()
t_compile = time.perf_counter() - t - t_lower
print(json.dumps(dict(first_step=r.get("time_to_first_step_s"), params=r.get("num_params"),
                      lower=t_lower, compile=t_compile)))
"""


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--configs", default=DEFAULT_CONFIGS)
  args = p.parse_args()
  env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
  rows = []
  for name in args.configs.split(","):
    code = CHILD.format(repo=REPO, name=os.path.join(REPO, name), run=True)
    with tempfile.TemporaryDirectory() as cwd:
      out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                           text=True)
    if out.returncode:
      print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
      continue
    r = json.loads(out.stdout.strip().splitlines()[-1])
    rows.append((name, r))
    print(f"{name}: first step {r['first_step']:.1f} s (lower {r['lower']:.1f} s, compile "
          f"{r['compile']:.1f} s)", flush=True)
  import jax
  print(f"\n{jax.devices()[0].device_kind}, {os.cpu_count()} cores, jax {jax.__version__}")
  print("| config | parameters | seconds to the first step | lowering s | XLA compile s |")
  print("| --- | --- | --- | --- | --- |")
  for name, r in rows:
    print(f"| {name} | {r['params']:,} | {r['first_step']:.1f} | {r['lower']:.1f} | "
          f"{r['compile']:.1f} |")


if __name__ == "__main__":
  main()
