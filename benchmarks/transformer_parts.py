"""What each part of the pycode Transformer's training step costs on this CPU: the trainer's
jitted step (the shape of benchmarks/cpu_transformer.py) built several times in one process,
each time with one part replaced, timed in interleaved windows (this VM's neighbours move a
whole process's rate by up to ~15%; interleaving in one process cancels most of that).

  .venv/bin/python benchmarks/transformer_parts.py [--windows=6] [--steps=10]
      [--variants=full,one_block,no_attention_core,no_layernorm,no_gelu]

Variants: full (as trained); one_block (causal attention in one query block, no keys skipped);
no_attention_core (attention returns q + k + v: the projections stay, softmax(q k^T) v goes);
no_layernorm (LayerNorms are the identity); no_gelu (GELU is the identity). A variant's cost
is its difference from full. Prints one line per variant (min and median ms/step over windows)
and a JSON line. Random tokens; the input pipeline is not in the step.
"""

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from bigmodel_jax.models import attention, transformer  # noqa: E402
from cpu_transformer import jax_step  # noqa: E402

VARIANTS = ("full", "one_block", "no_attention_core", "no_layernorm", "no_gelu")


class _Identity(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x


@contextlib.contextmanager
def _replaced(variant: str):
  saved = transformer.softmax_attention, transformer.layer_norm, nn.gelu
  if variant == "one_block":
    transformer.softmax_attention = functools.partial(attention.softmax_attention, query_blocks=1)
  elif variant == "no_attention_core":
    transformer.softmax_attention = lambda q, k, v, *args, **kwargs: q + k + v
  elif variant == "no_layernorm":
    transformer.layer_norm = lambda name=None, *args, **kwargs: _Identity(name=name)
  elif variant == "no_gelu":
    nn.gelu = lambda x, approximate=True: x
  elif variant != "full":
    raise SystemExit(f"variant '{variant}' unknown; known: {', '.join(VARIANTS)}")
  try:
    yield
  finally:
    transformer.softmax_attention, transformer.layer_norm, nn.gelu = saved


def _stepper(variant: str):
  """A function running n train steps of the variant (compiled and warmed up here)."""
  with _replaced(variant):
    step, state, (batch,) = jax_step(1)
    box = [state]

    def run(n: int) -> None:
      for _ in range(n):
        box[0], _ = step(box[0], batch)
      jax.block_until_ready(box[0])

    run(3)  # compiles under the replacement
  return run


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--windows", type=int, default=6)
  p.add_argument("--steps", type=int, default=10, help="steps per window")
  args = p.parse_args()
  variants = args.variants.split(",")
  runs = {v: _stepper(v) for v in variants}
  ms: dict[str, list[float]] = {v: [] for v in variants}
  for _ in range(args.windows):
    for v in variants:
      t = time.perf_counter()
      runs[v](args.steps)
      ms[v].append((time.perf_counter() - t) / args.steps * 1e3)
  row = {}
  for v in variants:
    row[v] = {"min_ms": round(min(ms[v]), 1), "median_ms": round(statistics.median(ms[v]), 1)}
    print(f"{v:18s} ms/step min {row[v]['min_ms']:6.1f}  median {row[v]['median_ms']:6.1f}")
  print(json.dumps(row))


if __name__ == "__main__":
  main()
