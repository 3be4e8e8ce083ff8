# Sourced by the gpu_issue*.sh scripts: on a GPU machine that has jax, flax, optax and orbax but
# not this project's other packages, the wheels in .whl/ (benchmarks/gpu_wheels.sh fetches them)
# are installed into /tmp/site and put on PYTHONPATH; output is unbuffered.
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
