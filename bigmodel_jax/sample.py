"""Samples of a trained model: text from a language model (bytes, or the run's tokenizer:
WORKDIR/tokenizer.json or .model; a converted Hugging Face model too), images (or 1-D signals)
from a generative one (objectives vae, gan, diffusion), captions of test images from a
captioner (objective captioning). The work: inference/samples.py.

  python -m bigmodel_jax.sample --workdir=runs/pycode_transformer [--prompt="def "] [--length=100]
      [--temperature=0] [--top_k=0] [--seed=0] [--no_cache]
  python -m bigmodel_jax.sample --workdir=runs/digits_ddpm [--num=10] [--out=FILE.png] [--seed=0]
  python -m bigmodel_jax.sample --workdir=runs/mm_captioner [--num=10] [--temperature=0] [--seed=0]

Captions: the first --num images of the eval split, each line "reference -> caption" (greedy at
temperature 0, else sampled), decoded with the key/value cache.

Images: a grid PNG, one row per class of a class-conditional model (--num samples each), else
--num rows of 10; written to --out (default WORKDIR/samples/sampled.png).

Temperature 0 is greedy decoding. A decoder_lm decodes with a key/value cache (the prompt in one
call, then one token per step); --no_cache recomputes the whole sequence each step instead, as
any language model can. Both give the same text (tests/test_sample.py).
"""

import math

from absl import app, flags

from bigmodel_jax import cli, storage
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.inference import samples


def main(argv: list[str]) -> None:
  def body() -> None:
    f = flags.FLAGS
    if f.num < 1:
      raise ConfigError(f"--num must be >= 1, got {f.num}")
    if not (math.isfinite(f.temperature) and f.temperature >= 0):
      raise ConfigError(f"--temperature must be a finite number >= 0 (0: greedy), got "
                        f"{f.temperature}")
    storage.check_bucket(f.out, "--out")
    if f.out and (not f.out.endswith(".png") or storage.isdir(f.out)):
      raise ConfigError(f"--out {f.out} must be a .png file to write, not a directory")
    if f.top_k < 0 or f.length < 1:
      raise ConfigError(f"--top_k must be >= 0 (0: all tokens) and --length >= 1, got {f.top_k} "
                        f"and {f.length}")
    print(samples.sample(f.workdir, num=f.num, out=f.out, prompt=f.prompt, length=f.length,
                         temperature=f.temperature, top_k=f.top_k, seed=f.seed,
                         use_cache=not f.no_cache))

  cli.run_command(argv, body)


def run() -> None:
  flags.DEFINE_string("workdir", None, "A language model's, generative model's or captioner's workdir.",
                      required=True)
  flags.DEFINE_integer("num", 10, "Images: samples per class (per row); captions: images.")
  flags.DEFINE_string("out", "", "Images: the PNG to write (default WORKDIR/samples/sampled.png).")
  flags.DEFINE_string("prompt", "def ", "Text to continue.")
  flags.DEFINE_integer("length", 100, "Tokens to generate (prompt + length <= the model's max_len).")
  flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0 = all).")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_bool("no_cache", False, "Recompute the whole sequence each step.")
  app.run(main)


if __name__ == "__main__":
  run()
