#!/bin/bash
# Wheels of this project's packages that the device tool's GPU machine lacks (it has jax, flax,
# optax, orbax, absl-py, numpy, PIL, scikit-learn, torch...), for Python 3.12 on x86-64, into
# .whl/ (git-ignored; carried with `carry: [".whl"]`, ~11 MB). benchmarks/gpu_issue20.sh
# installs them there with pip --target. promise has no wheel on PyPI: built here.
set -eu
cd "$(dirname "$0")/.."
mkdir -p .whl
for p in grain==0.2.18 tensorflow-datasets==4.9.10 array-record==0.8.6 ml-collections==1.1.0 \
    dm-tree==0.1.10 immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0 \
    tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 protobuf==7.36.2 \
    termcolor==3.3.0 toml==0.10.2 tensorboardX==2.6.5 qwix==0.1.8 importlib_resources==7.1.0 \
    portpicker mnist1d==0.0.2.post1; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$p"
done
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
ls .whl
