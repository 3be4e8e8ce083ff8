#!/bin/bash
# The GPU rows of issue 33 in one call (one H100/H200, about 4 minutes), on a machine with jax,
# flax, optax and orbax; the project's other packages come as wheels in .whl/
# (benchmarks/gpu_wheels.sh), as for gpu_issue20.sh. Run gpu_issue20.sh first if its rows are
# still owed. Rows go to $OUT (default /tmp/gpu_issue33); the last lines printed are the table.
#
#   bash benchmarks/gpu_issue33.sh
#
# The dense ~1B LM (benchmarks/gpu.py's default shape, width 2048, 20 blocks, MLP 8192) and the
# same LM with 8 experts of half the MLP's width in every block, top-2, capacity factor 1.25
# (~1B parameters active per token, 2.4B in all), at batch 16, bfloat16, full remat for both.
set -u
OUT=${OUT:-/tmp/gpu_issue33}
mkdir -p "$OUT"
source benchmarks/gpu_site.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/smi.txt"
timeout 240 python3 benchmarks/gpu.py --only=matmul,lm --lm_batch=16 --remat=full \
  --json="$OUT/dense.json" 2>&1 | tail -3 | tee "$OUT/dense.txt"
timeout 300 python3 benchmarks/gpu.py --only=lm --lm_batch=16 --remat=full --lm_experts=8 \
  --lm_experts_per_token=2 --lm_expert_dim=4096 --lm_capacity=1.25 --json="$OUT/moe.json" 2>&1 \
  | tail -3 | tee "$OUT/moe.txt"
