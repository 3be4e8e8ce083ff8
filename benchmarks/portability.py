"""How much of a run's numbers depend on the CPU: the two places where another machine changes bits.

  .venv/bin/python benchmarks/portability.py

1. MNIST-1D's generation (float64 numpy/scipy): generated here as is, and again with numpy's
   AVX-512 kernels switched off (NPY_DISABLE_CPU_FEATURES: what an AVX2-only CPU runs). Prints
   the checksums, how many values differ, by how much, and how many float32 records differ.
2. The golden-loss run of tests/test_train.py (MNIST-1D CNN, seed 0, 8 CPU devices, two AdamW
   steps) with XLA limited to older instruction sets (--xla_cpu_max_isa), as another CPU would
   compile it. Prints the first training loss and the eval loss of each, and their largest
   relative difference from this machine's.

Each measurement runs in its own process (the flags must be set before numpy or JAX start).
On a CPU without AVX-512 the first comparison shows no difference (there is nothing to switch
off); the pinned test values carry the tolerances these numbers justify.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GENERATE = """
import sys, numpy as np
from bigmodel_jax.data import mnist1d
np.savez(sys.argv[1], **mnist1d.generate())
"""

GOLDEN = """
import json, os, sys, tempfile
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
from conftest import small_config
from bigmodel_jax.trainer import train
c = small_config("cnn", "mnist1d", total_steps=2, log_every=1, eval_every=2, checkpoint_every=30,
                 batch_size=64, eval_batch_size=512, **{"schedule.name": "constant"})
w = tempfile.mkdtemp()
r = train.train_and_evaluate(c, w)
first = json.loads(open(os.path.join(w, "metrics.jsonl")).readline())
print(json.dumps({"first_loss": first["train/loss"], "eval_loss": r["eval/loss"]}))
"""


def _sha(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _avx512_features() -> list[str]:
  try:
    from numpy._core._multiarray_umath import __cpu_features__
  except ImportError:  # numpy 1.x
    from numpy.core._multiarray_umath import __cpu_features__
  return [f for f, on in __cpu_features__.items() if on and ("AVX512" in f or f == "X86_V4")]


def generation(tmp: str) -> None:
  runs = {}
  for name, env in [("native", {}), ("no AVX-512", {"NPY_DISABLE_CPU_FEATURES": " ".join(_avx512_features())})]:
    path = os.path.join(tmp, f"{len(runs)}.npz")
    subprocess.run([sys.executable, "-c", GENERATE, path], check=True, cwd=REPO,
                   env={**os.environ, **env})
    runs[name] = dict(np.load(path))
  a, b = runs["native"], runs["no AVX-512"]
  print("MNIST-1D generation, numpy", np.__version__, "| AVX-512 features here:",
        ", ".join(_avx512_features()) or "none")
  for key in ("x", "x_test"):
    diff = np.abs(a[key] - b[key])
    print(f"  {key}: sha {_sha(a[key])} (native) / {_sha(b[key])} (no AVX-512); "
          f"{int((a[key] != b[key]).sum()):,} of {a[key].size:,} values differ, largest by "
          f"{diff.max():.2g}; float32 records differing: "
          f"{int((a[key].astype(np.float32) != b[key].astype(np.float32)).sum())}")
  for key in ("y", "y_test"):
    print(f"  {key}: sha {_sha(a[key])} / {_sha(b[key])}")


def golden() -> None:
  print("Golden-loss run (tests/test_train.py::test_golden_losses) by XLA instruction set:")
  rows = {}
  for isa in ("", "AVX2", "AVX", "SSE4_2"):
    flags = "--xla_force_host_platform_device_count=8" + (f" --xla_cpu_max_isa={isa}" if isa else "")
    out = subprocess.run([sys.executable, "-c", GOLDEN, REPO], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})
    if out.returncode:
      print(f"  {isa or 'native'}: failed: {out.stderr.strip().splitlines()[-1]}")
      continue
    rows[isa or "native"] = json.loads(out.stdout.strip().splitlines()[-1])
  base = rows["native"]
  for name, r in rows.items():
    rel = max(abs(r[k] - base[k]) / abs(base[k]) for k in r)
    print(f"  {name:>7}: first loss {r['first_loss']!r}, eval loss {r['eval_loss']!r}; "
          f"largest relative difference {rel:.2g}")


if __name__ == "__main__":
  with tempfile.TemporaryDirectory() as tmp:
    os.environ.setdefault("TFDS_DATA_DIR", os.path.join(tmp, "tfds"))
    generation(tmp)
    golden()
