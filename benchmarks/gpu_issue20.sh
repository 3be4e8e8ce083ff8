#!/bin/bash
# The GPU rows of issue 20 in one call (one H100/H200, about 8 minutes), written for a machine
# that has jax, flax, optax and orbax but not this project's other packages: they come as wheels
# in .whl/ (benchmarks/gpu_wheels.sh fetches them). Logs and JSON rows go
# to $OUT (default /tmp/gpu_issue20); the last lines printed are the tables.
#
#   bash benchmarks/gpu_issue20.sh
#
# 1. the bf16 matrix-product ceiling and the ~1B decoder LM at batch 16 and 32 (benchmarks/gpu.py)
# 2. ResNet-50 bf16 fed by the JPEG pipeline vs the same step on one device batch
#    (benchmarks/gpu_image_input.py; the folder is generated and prepared on the CPU meanwhile)
# 3. the Llama-shaped ~1.1B LM (TinyLlama's shape) at batch 16 and 32
# 4. steps_per_call K=10 (rolled lax.scan) against K=1 (benchmarks/steps_per_call.py)
# 5. the LM at batch 16 with XLA's Triton GEMM fusions off and the latency-hiding scheduler on
set -u
OUT=${OUT:-/tmp/gpu_issue20}
mkdir -p "$OUT"
source benchmarks/gpu_site.sh
export TFDS_DATA_DIR=/tmp/tfds
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/smi.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint, grain, tensorflow_datasets as t, ml_collections
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'tfds', t.__version__, jax.devices())" 2>&1 | tail -1 | tee "$OUT/versions.txt"

# CPU only, in the background: the JPEG folder and its array_record
(JAX_PLATFORMS=cpu timeout 240 python3 -c "
import time; t = time.time()
from bigmodel_jax.data import jpeg_folder
jpeg_folder.write_synthetic('/tmp/jpegs'); print('folder', time.time() - t)
from bigmodel_jax import config as c
from bigmodel_jax.data import tasks
cfg = c.load_config_file('configs/image_folder.py:resnet50'); cfg.data.path = '/tmp/jpegs'
tasks.load(cfg); print('prepared', time.time() - t)" > "$OUT/prep.log" 2>&1) &
prep=$!

lm() {  # name, seconds, gpu.py arguments...
  local name=$1 limit=$2; shift 2
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 timeout "$limit" python3 benchmarks/gpu.py --json="$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $?"; grep -E "^\| (LM|Llama)|measured" "$OUT/$name.log"
}
lm lm 170 --only=matmul,lm --lm_batch=16,32 --steps=8
wait $prep; tail -2 "$OUT/prep.log"
timeout 110 python3 benchmarks/gpu_image_input.py --folder=/tmp/jpegs --workers=-1,12 \
  --json="$OUT/resnet_input.json" > "$OUT/resnet_input.log" 2>&1
echo "resnet_input: exit $?"; grep "^|" "$OUT/resnet_input.log"
lm llama 170 --only=lm --lm_shape=llama --lm_batch=16,32 --steps=8
timeout 80 python3 benchmarks/steps_per_call.py --ks=1,10 --loop_ks=10 --cycles=30 \
  > "$OUT/steps_per_call.log" 2>&1
echo "steps_per_call: exit $?"; grep "^|" "$OUT/steps_per_call.log"
XLA_FLAGS="--xla_gpu_enable_triton_gemm=false --xla_gpu_enable_latency_hiding_scheduler=true" \
  lm lm_flags 70 --only=lm --lm_batch=16 --steps=8
