"""Plans big LMs' training past one machine: --dry_run on virtual devices (64 and 256 unless a
suite says), and the step time the single-GPU MFU measured here predicts. Suites: llama
(Llama-2-shaped 7B and 70B under fsdp and fsdp_tp), mixtral (Mixtral-8x7B under fsdp and
fsdp_ep, the expert axis 8), pipeline (the 70B with pipeline stages, and tensor, on 16 to 256
devices: where it first fits 80 GiB), schedules (the 70B on 64 devices in 4 stages, GPipe
against 1F1B at M = 4, 8, 16 microbatches of 16 sequences) and context (the 7B on
32,768-token windows, the sequence over a context axis: ring attention).

  .venv/bin/python benchmarks/plan_lms.py llama      # a table (one process per device count)
  .venv/bin/python benchmarks/plan_lms.py mixtral
  .venv/bin/python benchmarks/plan_lms.py pipeline
  .venv/bin/python benchmarks/plan_lms.py schedules
  .venv/bin/python benchmarks/plan_lms.py context

Mixtral is planned with capacity_factor 1.25 (GShard-style slots, whose all-to-all is what
fsdp_ep exchanges): its dropless path multiplies with jax.lax.ragged_dot, which XLA:CPU lowers
to a dense product over every expert (8x the FLOPs and temporaries of a GPU's grouped GEMM), so
a CPU compile of it would plan nothing real. Model FLOPs count the active parameters (the
experts a token visits, 2 of 8), as Mixtral's "12.9B active" does.

Per device: parameters and optimizer state (exact, from the shardings), the compiled step's peak
(the CPU compiler's estimate), against 80 GB. FLOPs per step are the model's (6 x parameters +
attention, per token, PaLM's count); beside them the dry run's count (XLA's cost analysis of the
CPU compile, every scanned block counted: trainer/flops.py), with full remat's recomputed
forward pass and the optimizer in it. Predicted step time = model FLOPs / (devices x 989.4
TFLOP/s x MFU), MFU = 51.6% (the 1.07B LM on one H100, benchmarks/RESULTS.md), i.e. assuming the
communication hides behind the compute, which a real cluster only approaches.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H100_BF16 = 989.4e12
MFU = 0.516
_CAPACITY = {"model.capacity_factor": 1.25}
_STAGES = lambda p, m, r=1, kind=None: {"mesh.stage": p, "pipeline.microbatches": m, "pipeline.repeats": r,
                                      "pipeline.schedule": kind or ("circular" if r > 1 else "gpipe")}
_LONG = {"data.seq_len": 32768, "model.max_len": 32768, "batch_size": 32}  # 1M tokens per step
SUITES = {  # (config, sharding preset, overrides)
    "llama": [("llama.py:7b", "fsdp", {}), ("llama.py:7b", "fsdp_tp", {}),
              ("llama.py:70b", "fsdp", {}), ("llama.py:70b", "fsdp_tp", {})],
    "mixtral": [("moe.py:mixtral_8x7b", "fsdp", _CAPACITY),
                ("moe.py:mixtral_8x7b", "fsdp_ep", {**_CAPACITY, "mesh.expert": 8})],
    "pipeline": [("llama.py:70b", "fsdp", {}), ("llama.py:70b", "fsdp", _STAGES(4, 4)), ("llama.py:70b", "fsdp", _STAGES(4, 16)),
                 ("llama.py:70b", "fsdp", _STAGES(8, 8)), ("llama.py:70b", "fsdp", _STAGES(4, 4, 2)),
                 ("llama.py:70b", "fsdp_tp", _STAGES(4, 4))],
    # the schedules at a fixed microbatch of 16 sequences (the batch 16 M): GPipe keeps every
    # tick's activations, 1F1B at most 2P - 1 microbatches' inputs per stage
    "schedules": [("llama.py:70b", "fsdp", {**_STAGES(4, m, kind=kind), "batch_size": 16 * m})
                  for kind in ("gpipe", "1f1b") for m in (4, 8, 16)],
    "context": [("llama.py:7b", "fsdp", {**_LONG, "mesh.context": 8}),
                ("llama.py:7b", "fsdp_tp", {**_LONG, "mesh.context": 4}),
                ("llama.py:7b", "fsdp", {**_LONG, "mesh.context": 16})],
}
DEVICES = {"pipeline": (32, 64, 128, 256), "schedules": (64,)}  # the others: 64, 256


def model_flops_per_step(c) -> float:
  """6N + 12 * depth * width * seq_len per token (PaLM, appendix B), times tokens per step; N
  the parameters a token uses (of a mixture of experts: its experts_per_token experts)."""
  m = c.model
  kv = m.num_kv_heads or m.num_heads
  head = m.dim // m.num_heads
  vocab = 32000
  experts = m.get("num_experts", 0)
  mlp = (3 * m.dim * (m.get("expert_dim") or m.mlp_dim) * m.experts_per_token
         + m.dim * experts) if experts else 3 * m.dim * m.mlp_dim
  n = (m.depth * (m.dim * head * (m.num_heads + 2 * kv) + m.num_heads * head * m.dim
                  + mlp + 2 * m.dim) + 2 * vocab * m.dim + m.dim)
  tokens = c.batch_size * c.data.seq_len
  return (6 * n + 12 * m.depth * m.dim * c.data.seq_len) * tokens, n


def plan_all(suite: str, devices: int) -> None:
  from bigmodel_jax.trainer import planning
  from bigmodel_jax.config import load_config_file
  from bigmodel_jax.faults import ConfigError
  for spec, preset, overrides in SUITES[suite]:
    c = load_config_file(os.path.join(REPO, "configs", spec))
    c.sharding = preset
    c.update_from_flattened_dict(overrides)
    size = spec.partition(":")[2] + (f" {c.data.seq_len // 1024}k" if "data.seq_len" in overrides
                                     else "")
    try:
      r = planning.dry_run(c, budget_gb=80)
    except ConfigError as e:  # a mesh this device count cannot hold
      print(json.dumps({"size": size, "sharding": preset, "devices": devices, "skipped": str(e)}))
      continue
    flops, n = model_flops_per_step(c)
    step_s = flops / (devices * H100_BF16 * MFU)
    pipe = (f" {c.pipeline.schedule} M={c.pipeline.microbatches} R={c.pipeline.repeats}"
            if c.mesh.get("stage", 1) and c.mesh.stage > 1 else "")
    print(json.dumps({"size": size, "sharding": preset + pipe, "devices": devices,
                      "mesh": r["mesh"],
                      "num_params": r["num_params"], "analytic_params": n,
                      "params_gib": r["params_bytes"] / 2**30,
                      "opt_state_gib": r["opt_state_bytes"] / 2**30,
                      "peak_gib": r["peak_bytes"] / 2**30, "fits_80gb": r["fits"],
                      "model_flops_per_step": flops, "predicted_step_s": step_s,
                      "xla_flops_per_step": r["flops_per_step_per_device"] * devices,
                      "predicted_tokens_per_s": c.batch_size * c.data.seq_len / step_s}),
          flush=True)


def main() -> None:
  suite = sys.argv[1] if len(sys.argv) > 1 else "llama"
  if suite not in SUITES:
    sys.exit(f"error: unknown suite '{suite}'; known: {', '.join(SUITES)}")
  if len(sys.argv) > 2:
    n = int(sys.argv[2])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    os.environ["JAX_PLATFORMS"] = "cpu"
    plan_all(suite, n)
    return
  rows = []
  for n in DEVICES.get(suite, (64, 256)):
    out = subprocess.run([sys.executable, __file__, suite, str(n)], capture_output=True,
                         text=True, cwd=REPO, check=True).stdout
    rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  print("| model | devices | preset (mesh) | parameters / device | optimizer state / device | "
        "peak / device (CPU estimate) | fits 80 GiB | model FLOPs / step | XLA FLOPs / step | "
        "predicted step | predicted tokens/s |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    if "skipped" in r:
      print(f"| {r['size']} | {r['devices']} | {r['sharding']}: {r['skipped']} |")
      continue
    print(f"| {r['size']} ({r['num_params'] / 1e9:.2f}B) | {r['devices']} | {r['sharding']} "
          f"{r['mesh']} | {r['params_gib']:.2f} GiB | {r['opt_state_gib']:.2f} GiB | "
          f"{r['peak_gib']:.1f} GiB | {'yes' if r['fits_80gb'] else 'no'} | "
          f"{r['model_flops_per_step']:.3g} | {r['xla_flops_per_step']:.3g} | "
          f"{r['predicted_step_s']:.2f} s | "
          f"{r['predicted_tokens_per_s']:,.0f} |")


if __name__ == "__main__":
  main()
