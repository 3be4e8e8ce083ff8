"""How close converted Hugging Face checkpoints compute to transformers: each fixture of
tests/fixtures/pretrained/ converted with no --config (the architecture from its config.json),
its eval logits against the reference logits make.py saved, as a fraction of the largest logit.

  .venv/bin/python benchmarks/convert_logits.py      # a few seconds; prints one line per fixture

The Llama 3.1 rope-scaled fixture is also computed with its scaling switched off, to show the
scaling is what brings it to transformers' logits.
"""

import os
import sys
import tempfile

import jax.numpy as jnp
import numpy as np

from bigmodel_jax.inference import predict
from bigmodel_jax.pretrained import convert
from bigmodel_jax.runs import load

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                        "fixtures", "pretrained")
HF = ("gpt2", "gpt2_eps", "llama", "llama_theta", "llama3", "mixtral")


def relative(got: np.ndarray, want: np.ndarray) -> float:
  return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


def main() -> None:
  with tempfile.TemporaryDirectory() as tmp:
    for name in HF:
      workdir = os.path.join(tmp, name)
      report = convert.convert_in(os.path.join(FIXTURES, name), None, workdir)
      ref = np.load(os.path.join(FIXTURES, f"{name}_logits.npz"))
      line = (f"{name}: {report['family']}, tokenizer {report.get('tokenizer', 'none')}: logits "
              f"{relative(predict.outputs(workdir, ref['tokens']), ref['logits']):.2e} of the "
              f"largest")
      if name == "llama3":
        run = load.load(workdir)
        plain = run.model.clone(rope_scaling="none").apply(run.variables,
                                                           jnp.asarray(ref["tokens"]))
        line += f" (with the scaling off: {relative(plain, ref['logits']):.2e})"
      print(line, flush=True)


if __name__ == "__main__":
  sys.exit(main())
