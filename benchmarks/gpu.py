"""Throughput on one accelerator, each model through the trainer's own jitted step
(bigmodel_jax.steps.jit_train_step: mixed precision, NaN guard, donated state):

  * the chip's bf16 matrix-product rate (an 8192^3 product), the ceiling MFU is read against too;
  * a decoder-only Transformer LM of about 1B parameters in bfloat16 (cuDNN flash attention via
    jax.nn.dot_product_attention): tokens/s and model FLOPs utilization;
  * the same LM Llama-shaped (--lm_shape=llama: RMSNorm, SwiGLU, grouped-query attention,
    untied embeddings, no biases; by default TinyLlama-1.1B's shape: width 2048, 22 blocks,
    32 heads of 64 over 4 key/value heads, SwiGLU 5632, vocabulary 32,000);
  * either LM with a mixture of experts in every block (--lm_experts=8 --lm_experts_per_token=2
    --lm_expert_dim=4096: ~1B parameters active per token, as the dense LM);
  * ResNet-50 on synthetic 224x224 ImageNet-sized batches in bfloat16: images/s.

  python benchmarks/gpu.py                       # everything, on the default device
  python benchmarks/gpu.py --only=lm --lm_shape=llama --lm_batch=16,32
  python benchmarks/gpu.py --only=lm --lm_batch=8,16 --remat=none,dots
  python benchmarks/gpu.py --tiny                # the same code at toy sizes (a CPU smoke test)
  python benchmarks/gpu.py --only=lm --lm_experts=8 --lm_experts_per_token=2 --lm_expert_dim=4096

Model FLOPs of the LM per token: 6 N (N: the parameters that multiply: all of them with a tied
embedding, which is also the output layer; without the input embedding table when untied, as a
lookup is no product; of a mixture of experts, only the experts_per_token experts a token visits,
as "active parameters" count) plus causal attention 6 * depth * dim * seq_len (half of PaLM's 12 L d T: the masked half
is never computed by flash attention). XLA's own count of the compiled step is printed beside it
(it includes what remat recomputes, but on GPUs it leaves out the matrix products and attention
that run as cuBLAS/cuDNN library calls, so there it is far below the model's count).
MFU = model FLOP/s / peak; --peak_tflops is the data-sheet dense bf16 rate (H100 SXM: 989), and
the measured matrix-product rate is given as well.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bigmodel_jax import config as config_lib  # noqa: E402
from bigmodel_jax.trainer import build as build_lib  # noqa: E402
from bigmodel_jax.trainer import flops  # noqa: E402
from bigmodel_jax.trainer import state as state_lib  # noqa: E402
from bigmodel_jax.trainer import steps  # noqa: E402

# Data-sheet dense bf16 tensor-core rates (TFLOP/s) by device kind, for MFU.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def matmul_tflops(n: int, reps: int = 10) -> float:
  """Median rate of an n x n x n bf16 product on random data (2 n^3 FLOPs each)."""
  a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.bfloat16) for i in (0, 1))
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n**3 / statistics.median(times) / 1e12


def compile_step(config: ml_collections.ConfigDict, num_outputs: int, example, batch) -> dict:
  """The trainer's state and compiled step for `config`, plus XLA's FLOPs of one step per device
  (flops.per_device: every layer of a scanned stack counted)."""
  b = build_lib.build(config, example, num_outputs, 100_000)  # the trainer's build
  plan = b.plan
  state, shardings = b.create_state(config.seed)
  step = steps.jit_train_step(plan, shardings, **b.step_options)
  batch = jax.device_put(batch, plan.batch_sharding)
  t = time.perf_counter()
  traced = step.trace(state, batch)
  compiled = traced.lower().compile()
  compile_s = time.perf_counter() - t
  xla_flops = flops.per_device(traced, compiled)  # every scanned layer counted
  return dict(state=state, step=compiled, batch=batch, compile_s=compile_s,
              xla_flops=xla_flops or 0.0, num_params=state_lib.num_params(state.params))


def time_steps(run: dict, warmup: int, steps_per_window: int, windows: int) -> float:
  """Median seconds per step over `windows` windows of back-to-back steps (one sync each)."""
  state = run["state"]
  for _ in range(warmup):
    state, m = run["step"](state, run["batch"])
  m["loss"].block_until_ready()
  per_step = []
  for _ in range(windows):
    t = time.perf_counter()
    for _ in range(steps_per_window):
      state, m = run["step"](state, run["batch"])
    loss = float(m["loss"])  # waits for the window's last step
    per_step.append((time.perf_counter() - t) / steps_per_window)
  if not np.isfinite(loss):
    raise RuntimeError(f"non-finite loss {loss}")
  run["state"] = state
  return statistics.median(per_step)


# Sizes a flag leaves unset, by --lm_shape: the issue-7 LM, and TinyLlama-1.1B (Llama 2's design
# at width 2048).
SHAPES = {"gpt": dict(lm_dim=2048, lm_depth=20, lm_heads=16, lm_kv_heads=0, lm_mlp=0,
                      lm_vocab=32768),
          "llama": dict(lm_dim=2048, lm_depth=22, lm_heads=32, lm_kv_heads=4, lm_mlp=5632,
                        lm_vocab=32000)}


def lm_config(args, batch: int, remat: str) -> ml_collections.ConfigDict:
  c = config_lib.default_config()
  c.dtype = "bfloat16"
  c.batch_size = batch
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 3e-4
  c.optimizer.weight_decay = 0.1
  c.model = ml_collections.ConfigDict(dict(
      name="decoder_lm", dim=args.lm_dim, depth=args.lm_depth, num_heads=args.lm_heads,
      mlp_dim=args.lm_mlp or 4 * args.lm_dim, max_len=args.lm_seq, positions="rotary",
      tie_embeddings=True, remat=remat, scan_layers=args.scan_layers, attention=args.attention))
  if args.lm_shape == "llama":
    c.model.update(norm="rmsnorm", norm_epsilon=1e-5, mlp="swiglu", use_bias=False,
                   rope_base=10000.0, tie_embeddings=False, num_kv_heads=args.lm_kv_heads)
  if args.lm_experts:
    c.model.update(num_experts=args.lm_experts, experts_per_token=args.lm_experts_per_token,
                   expert_dim=args.lm_expert_dim, capacity_factor=args.lm_capacity)
  return c


def idle_expert_params(args) -> int:
  """Parameters of the experts a token does not visit (all blocks are MoE): not in 6 N."""
  if not args.lm_experts:
    return 0
  d, h = args.lm_dim, args.lm_expert_dim or args.lm_mlp or 4 * args.lm_dim
  per_expert = 3 * d * h if args.lm_shape == "llama" else 2 * d * h + h + d
  return args.lm_depth * (args.lm_experts - args.lm_experts_per_token) * per_expert


def bench_lm(args, peak: float, measured: float) -> list[dict]:
  rows = []
  for batch in args.lm_batch:
    for remat in args.remat:
      c = lm_config(args, batch, remat)
      moe = (f" MoE {args.lm_experts}x{args.lm_expert_dim} top-{args.lm_experts_per_token} "
             f"cf {args.lm_capacity}" if args.lm_experts else "")
      name = (f"{'Llama' if args.lm_shape == 'llama' else 'LM'} d{args.lm_dim} x{args.lm_depth}"
              f"{moe} seq {args.lm_seq} batch {batch} remat {remat}")
      try:
        tokens = jax.random.randint(jax.random.PRNGKey(1), (batch, args.lm_seq + 1), 0,
                                    args.lm_vocab, jnp.int32)
        run = compile_step(c, args.lm_vocab, tokens[:1, :-1], {"inputs": tokens[:, :-1],
                                                       "label": tokens[:, 1:]})
        sec = time_steps(run, args.warmup, args.steps, args.windows)
      except Exception as e:  # noqa: BLE001 -- an OOM or unsupported variant is a row, not a crash
        rows.append(dict(name=name, error=str(e).splitlines()[0][:160]))
        print(rows[-1], flush=True)
        continue
      n, tokens_per_step = run["num_params"], batch * args.lm_seq
      untied_lookup = args.lm_vocab * args.lm_dim if args.lm_shape == "llama" else 0
      model_flops = tokens_per_step * (6 * (n - untied_lookup - idle_expert_params(args))
                                       + 6 * args.lm_depth * args.lm_dim * args.lm_seq)
      rows.append(dict(
          name=name, params=n, step_s=sec, compile_s=run["compile_s"],
          tokens_per_s=tokens_per_step / sec, model_tflops=model_flops / sec / 1e12,
          xla_tflops=run["xla_flops"] / sec / 1e12, mfu=model_flops / sec / 1e12 / peak,
          mfu_measured_peak=model_flops / sec / 1e12 / measured if measured else None))
      print(rows[-1], flush=True)
      del run
  return rows


def bench_resnet(args) -> list[dict]:
  rows = []
  for batch in args.resnet_batch:
    c = config_lib.load_config_file("configs/imagenet2012.py:resnet50")
    c.dtype = "bfloat16"
    c.batch_size = batch
    size = args.image_size
    name = f"ResNet-50 {size}x{size} batch {batch}"
    if args.tiny:
      c.model.depth = 18
      name = f"ResNet-18 {size}x{size} batch {batch}"
    try:
      images = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, 3), jnp.float32)
      labels = jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 1000, jnp.int32)
      run = compile_step(c, 1000, images[:1], {"inputs": images, "label": labels})
      sec = time_steps(run, args.warmup, args.steps, args.windows)
    except Exception as e:  # noqa: BLE001
      rows.append(dict(name=name, error=str(e).splitlines()[0][:160]))
      print(rows[-1], flush=True)
      continue
    rows.append(dict(name=name, params=run["num_params"], step_s=sec, compile_s=run["compile_s"],
                     images_per_s=batch / sec, xla_tflops=run["xla_flops"] / sec / 1e12))
    print(rows[-1], flush=True)
    del run
  return rows


def main() -> None:
  ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", default="matmul,lm,resnet")
  p.add_argument("--tiny", action="store_true", help="toy sizes: check the script on a CPU")
  p.add_argument("--lm_shape", default="gpt", choices=sorted(SHAPES),
                 help="gpt (LayerNorm, GELU, tied) | llama")
  p.add_argument("--lm_dim", type=int, default=None)
  p.add_argument("--lm_depth", type=int, default=None)
  p.add_argument("--lm_heads", type=int, default=None)
  p.add_argument("--lm_kv_heads", type=int, default=None, help="llama: key/value heads")
  p.add_argument("--lm_mlp", type=int, default=None, help="0: 4 x lm_dim")
  p.add_argument("--lm_seq", type=int, default=2048)
  p.add_argument("--lm_vocab", type=int, default=None)
  p.add_argument("--lm_batch", type=ints, default=[16])
  p.add_argument("--lm_experts", type=int, default=0, help="> 0: every block a mixture of experts")
  p.add_argument("--lm_experts_per_token", type=int, default=2)
  p.add_argument("--lm_expert_dim", type=int, default=0, help="0: the MLP's width")
  p.add_argument("--lm_capacity", type=float, default=1.25, help="capacity factor; 0: dropless")
  p.add_argument("--remat", type=lambda s: s.split(","), default=["none"])
  p.add_argument("--attention", default="auto", help="auto (cuDNN on GPU where it applies), "
                 "cudnn, xla")
  p.add_argument("--scan_layers", action="store_true")
  p.add_argument("--resnet_batch", type=ints, default=[256])
  p.add_argument("--image_size", type=int, default=224)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--windows", type=int, default=3)
  p.add_argument("--peak_tflops", type=float, default=0.0, help="0: by device kind")
  p.add_argument("--json", default="", help="also write the rows here")
  args = p.parse_args()
  for k, v in SHAPES[args.lm_shape].items():  # the shape's size where no flag gives one
    if getattr(args, k) is None:
      setattr(args, k, v)
  if args.tiny:
    args.lm_dim, args.lm_depth, args.lm_heads, args.lm_seq, args.lm_vocab = 64, 2, 4, 64, 256
    args.lm_mlp, args.lm_kv_heads = 128, 2
    args.lm_expert_dim = 64 if args.lm_experts else 0
    args.lm_batch, args.resnet_batch, args.image_size = [2], [2], 64
    args.warmup, args.steps, args.windows = 1, 2, 1
  device = jax.devices()[0]
  kind = device.device_kind
  peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in kind), 0.0)
  only = set(args.only.split(","))
  print(f"device: {kind} ({device.platform}), jax {jax.__version__}; peak for MFU: "
        f"{peak or 'unknown'} TFLOP/s", flush=True)
  measured = matmul_tflops(512 if args.tiny else 8192) if "matmul" in only else 0.0
  if measured:
    print(f"bf16 matrix product: {measured:.1f} TFLOP/s measured", flush=True)
  peak = peak or measured or 1.0
  rows = (bench_lm(args, peak, measured) if "lm" in only else []) + (
      bench_resnet(args) if "resnet" in only else [])
  if args.json:
    with open(args.json, "w") as f:
      json.dump(dict(device=kind, jax=jax.__version__, peak_tflops=peak,
                     matmul_tflops=measured, rows=rows), f, indent=1)
  print(f"\n| run | params | step s | compile s | throughput | model TFLOP/s | XLA TFLOP/s | "
        f"MFU (peak {peak:.0f}) | MFU (measured {measured:.0f}) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if "error" in r:
      print(f"| {r['name']} | failed: {r['error']} | | | | | | | |")
      continue
    thr = (f"{r['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in r
           else f"{r['images_per_s']:,.0f} images/s")
    mt = f"{r['model_tflops']:.1f}" if "model_tflops" in r else ""
    mfu = f"{r['mfu']:.1%}" if "mfu" in r else ""
    mfu2 = f"{r['mfu_measured_peak']:.1%}" if r.get("mfu_measured_peak") else ""
    print(f"| {r['name']} | {r['params']:,} | {r['step_s']:.4f} | {r['compile_s']:.1f} | {thr} | "
          f"{mt} | {r['xla_tflops']:.1f} | {mfu} | {mfu2} |")


if __name__ == "__main__":
  main()
