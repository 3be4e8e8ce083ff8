"""What `python -m bigmodel_jax.sample` draws from a workdir (runs/load.py reads it): text from a
language model (bytes, or the run's tokenizer: WORKDIR/tokenizer.json or .model), images (or 1-D
signals) from a generative model (objectives vae, gan, diffusion) as a PNG grid, captions of
eval images from a captioner (objective captioning)."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from bigmodel_jax import objectives, storage
from bigmodel_jax.config import objective_name
from bigmodel_jax.data import pipeline, tokenizer
from bigmodel_jax.data.words import Words
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models import decoding
from bigmodel_jax.runs import load
from bigmodel_jax.trainer import grids

GENERATIVE = ("vae", "gan", "diffusion")


def sample(workdir: str, *, num: int = 10, out: str = "", prompt: str = "def ",
           length: int = 100, temperature: float = 0.0, top_k: int = 0, seed: int = 0,
           use_cache: bool = True) -> str:
  """What the workdir's model draws, as the text to print: a language model's continuation of
  `prompt`, a captioner's "reference -> caption" lines for the first `num` eval images, or a
  generative model's grid (`num` per class, or `num` rows) written to `out` (default
  WORKDIR/samples/sampled.png), named."""
  name = objective_name(load.read_config(workdir))
  if name == "captioning":
    return "\n".join(f"{reference} -> {caption}"
                     for reference, caption in captions(workdir, num, temperature, seed))
  if name in GENERATIVE:
    out = out or storage.join(workdir, "samples", "sampled.png")
    grids.save(images(workdir, num, seed), out)
    return out
  if name != "lm":
    raise ConfigError(f"{workdir} holds a {name} run, not a language model, generative model "
                      "or captioner")
  return text(workdir, prompt, length, temperature=temperature, top_k=top_k, seed=seed,
              use_cache=use_cache)


def text(workdir: str, prompt: str, length: int, **options: Any) -> str:
  """`prompt` and `length` new tokens of a language model's workdir (decoding.generate's
  options: temperature, top_k, seed, use_cache)."""
  lm = load.load(workdir)
  path = tokenizer.in_directory(workdir)
  tok = tokenizer.load_file(path) if path else None
  top_k = options.get("top_k", 0)
  if top_k > lm.model.vocab_size:
    raise ConfigError(f"--top_k={top_k} is more than the model's {lm.model.vocab_size} tokens")
  tokens = decoding.generate(lm.model, lm.variables["params"], tokenizer.encode_one(tok, prompt),
                             length, **options)
  return tokenizer.decode(tok, tokens)


def images(workdir: str, num: int, seed: int = 0) -> np.ndarray:
  """R x num samples of a generative model's workdir: R = its classes when class-conditional
  (row r of class r), else num rows of grids.COLUMNS."""
  run = load.load(workdir)
  objective = objectives.build(run.config, run.model, run.example, run.num_outputs)
  rows = objective.num_classes if objective.conditional else num
  columns = num if objective.conditional else grids.COLUMNS
  labels = np.repeat(np.arange(rows) if objective.conditional else np.zeros(rows), columns)
  x = jax.jit(objective.sample)(run.variables, jax.random.PRNGKey(seed),
                                jnp.asarray(labels, jnp.int32))
  return np.asarray(x).reshape(rows, columns, *x.shape[1:])


def captions(workdir: str, num: int, temperature: float = 0.0,
             seed: int = 0) -> list[tuple[str, str]]:
  """(a reference caption, the model's caption) of the eval split's first `num` images, greedy
  at temperature 0, decoded with the key/value cache."""
  run = load.load(workdir)
  objective = objectives.build(run.config, run.model, run.example, run.num_outputs)
  examples = pipeline.load(run.config.data).eval
  batch = examples.gather(np.arange(min(num, len(examples))))
  length = batch["inputs"]["text"].shape[1]
  caption = jax.jit(functools.partial(objective.caption, length=length, temperature=temperature))
  ids = caption({"params": run.variables["params"]}, jnp.asarray(batch["inputs"]["image"]),
                rng=jax.random.PRNGKey(seed))
  builder = tfds.builder(run.config.data.name, data_dir=run.config.data.data_dir or None)
  words = Words(builder.info.metadata["vocabulary"])
  return [(words.decode(r), words.decode(c))
          for r, c in zip(batch["inputs"]["text"], np.asarray(ids))]
