"""Samples of a trained model: text from a language model (bytes, or the run's tokenizer:
WORKDIR/tokenizer.json; a converted Hugging Face model too), images (or 1-D signals)
from a generative one (objectives vae, gan, diffusion), captions of test images from a
captioner (objective captioning).

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

import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from bigmodel_jax import cli
from bigmodel_jax import config as config_lib


def _pick(logits_V: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
  if temperature == 0:
    return jnp.argmax(logits_V)
  logits_V = logits_V / temperature
  if top_k:
    kth = jnp.sort(logits_V)[-top_k]
    logits_V = jnp.where(logits_V < kth, -jnp.inf, logits_V)
  return jax.random.categorical(key, logits_V)


def generate(model: nn.Module, params: Any, prompt: list[int], length: int, *,
             temperature: float = 0.0, top_k: int = 0, seed: int = 0,
             use_cache: bool = True) -> list[int]:
  """The prompt followed by `length` new tokens (batch of one)."""
  total = len(prompt) + length
  max_len = getattr(model, "max_len", total)
  if not prompt or total > max_len:
    raise config_lib.ConfigError(f"prompt ({len(prompt)} tokens) + length ({length}) must be "
                                 f"between 1 and the model's max_len {max_len}")
  key = jax.random.PRNGKey(seed)
  pick = lambda logits, t: _pick(logits, jax.random.fold_in(key, t), temperature, top_k)
  tokens = list(prompt)
  if use_cache:
    if not hasattr(model, "max_len"):
      raise config_lib.ConfigError(f"model {type(model).__name__} has no key/value cache; "
                                   "use --no_cache")
    cache = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, max_len), jnp.int32),
                                              decode=True)["cache"])
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)

    @jax.jit
    def step(cache, tokens_1xL, start, t):
      logits, updated = model.apply({"params": params, "cache": cache}, tokens_1xL, decode=True,
                                    start=start, mutable=["cache"])
      return updated["cache"], pick(logits[0, -1], t)

    cache, token = step(cache, jnp.asarray([prompt], jnp.int32), 0, len(prompt))
    for t in range(len(prompt), total):
      tokens.append(int(token))
      if t + 1 < total:
        cache, token = step(cache, jnp.asarray([[tokens[-1]]], jnp.int32), t, t + 1)
    return tokens

  @jax.jit
  def full(buffer_1xT, t):
    return pick(model.apply({"params": params}, buffer_1xT)[0, t - 1], t)

  buffer = np.zeros((1, max_len), np.int32)  # fixed shape: one compilation; causal, so the
  buffer[0, :len(prompt)] = prompt  # zeros after position t do not change its logits
  for t in range(len(prompt), total):
    buffer[0, t] = int(full(jnp.asarray(buffer), t))
    tokens.append(int(buffer[0, t]))
  return tokens


def workdir_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise config_lib.ConfigError(f"no config.json in {workdir}: not a workdir")
  with open(path) as f:
    config = config_lib.default_config()
    config.update(ml_collections.ConfigDict(tuples(json.load(f))))
    return config


def load(workdir: str) -> tuple[nn.Module, Any, Any]:
  """The language model of a workdir (trained or converted), the parameters of its newest
  checkpoint, and its tokenizer (WORKDIR/tokenizer.json; None: bytes)."""
  from bigmodel_jax import convert
  from bigmodel_jax.data import tokenizer

  config = workdir_config(workdir)
  if config.data.kind != "lm":
    raise config_lib.ConfigError(f"{workdir} holds a {config.data.kind} run, not a language model")
  _, model, variables = convert.load(workdir)
  path = os.path.join(workdir, "tokenizer.json")
  return model, variables["params"], tokenizer.load_file(path) if os.path.exists(path) else None


def encode(tok: Any, text: str) -> list[int]:
  return list(text.encode()) if tok is None else tok.encode(text, add_special_tokens=False).ids


def decode(tok: Any, tokens: list[int]) -> str:
  return bytes(tokens).decode("utf-8", errors="replace") if tok is None else tok.decode(tokens)


def tuples(x: Any) -> Any:
  """JSON lists back to tuples (config fields such as patch sizes are tuples)."""
  if isinstance(x, dict):
    return {k: tuples(v) for k, v in x.items()}
  return tuple(tuples(v) for v in x) if isinstance(x, list) else x


GENERATIVE = ("vae", "gan", "diffusion")


def generate_images(workdir: str, num: int, seed: int = 0) -> np.ndarray:
  """R x num samples of a generative model's workdir: R = its classes when class-conditional
  (row r of class r), else num rows."""
  from bigmodel_jax import checkpoint, models, objectives
  from bigmodel_jax.data import pipeline

  config = workdir_config(workdir)
  if config_lib.objective_name(config) not in GENERATIVE:
    raise config_lib.ConfigError(f"{workdir} holds a {config_lib.objective_name(config)} run, "
                                 f"not a generative model ({', '.join(GENERATIVE)})")
  example, num_outputs = pipeline.input_spec(config.data)
  model = models.build(config.model, num_outputs)
  objective = objectives.build(config, model, example, num_outputs)
  boxed = jax.eval_shape(lambda: nn.unbox(model.init(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
      jnp.zeros(example.shape, example.dtype), train=False)))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {"params": boxed.pop("params"), "model_state": dict(boxed)}
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
  restored = checkpoint.load_variables(workdir, abstract)
  rows = objective.num_classes if objective.conditional else num
  columns = num if objective.conditional else 10
  labels = np.repeat(np.arange(rows) if objective.conditional else np.zeros(rows), columns)
  x = jax.jit(objective.sample)({"params": restored["params"], **restored["model_state"]},
                                jax.random.PRNGKey(seed), jnp.asarray(labels, jnp.int32))
  return np.asarray(x).reshape(rows, columns, *x.shape[1:])


def captions(workdir: str, num: int, temperature: float = 0.0,
             seed: int = 0) -> list[tuple[str, str]]:
  """(a reference caption, the model's caption) of the eval split's first `num` images."""
  import functools

  import tensorflow_datasets as tfds

  from bigmodel_jax import checkpoint, models, objectives
  from bigmodel_jax.data import pipeline
  from bigmodel_jax.data.words import Words

  config = workdir_config(workdir)
  if config_lib.objective_name(config) != "captioning":
    raise config_lib.ConfigError(f"{workdir} holds a {config_lib.objective_name(config)} run, "
                                 "not a captioner")
  example, num_outputs = pipeline.input_spec(config.data)
  model = models.build(config.model, num_outputs)
  objective = objectives.build(config, model, example, num_outputs)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.eval_shape(lambda: nn.unbox(model.init(
      jax.random.PRNGKey(0), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), example))
      ["params"]))
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract)
  params = checkpoint.load_params(workdir, abstract)[0]
  examples = pipeline.load(config.data).eval
  batch = examples.gather(np.arange(min(num, len(examples))))
  length = batch["inputs"]["text"].shape[1]
  caption = jax.jit(functools.partial(objective.caption, length=length, temperature=temperature))
  ids = caption({"params": params}, jnp.asarray(batch["inputs"]["image"]),
                rng=jax.random.PRNGKey(seed))
  builder = tfds.builder(config.data.name, data_dir=config.data.data_dir or None)
  words = Words(builder.info.metadata["vocabulary"])
  return [(words.decode(r), words.decode(c)) for r, c in zip(batch["inputs"]["text"], np.asarray(ids))]


def save_grid(x: np.ndarray, path: str, zoom: int = 4) -> None:
  """R x C samples -> one PNG: images (H x W x 1 or 3) values in [0, 1]; signals (L) plotted.
  Written atomically (a reader never sees half a file)."""
  from PIL import Image

  if x.ndim == 3:  # R x C x L signals: each a small plot
    x = _plot(x)
  x = np.clip(x, 0, 1)
  rows, cols, h, w, ch = x.shape
  gap = 1
  canvas = np.ones((rows * (h + gap) + gap, cols * (w + gap) + gap, ch), np.float32)
  for r in range(rows):
    for c in range(cols):
      canvas[gap + r * (h + gap):gap + r * (h + gap) + h,
             gap + c * (w + gap):gap + c * (w + gap) + w] = x[r, c]
  image = (canvas * 255).round().astype(np.uint8).repeat(zoom, 0).repeat(zoom, 1)
  image = image[..., 0] if ch == 1 else image
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.png"
  try:
    Image.fromarray(image).save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _plot(x_RxCxL: np.ndarray, height: int = 24) -> np.ndarray:
  """Signals as dark curves on white, R x C x height x L x 1, one scale for all."""
  lo, hi = float(x_RxCxL.min()), float(x_RxCxL.max())
  y = np.round((1 - (x_RxCxL - lo) / max(hi - lo, 1e-9)) * (height - 1)).astype(int)
  out = np.ones((*x_RxCxL.shape[:2], height, x_RxCxL.shape[2], 1), np.float32)
  for j in range(x_RxCxL.shape[2]):
    nxt = y[..., min(j + 1, x_RxCxL.shape[2] - 1)]
    top, bottom = np.minimum(y[..., j], nxt), np.maximum(y[..., j], nxt)
    rows = np.arange(height)[None, None]
    out[..., j, 0] = np.where((rows >= top[..., None]) & (rows <= bottom[..., None]), 0.0,
                              out[..., j, 0])
  return out


def main(argv: list[str]) -> None:
  def body() -> None:
    f = flags.FLAGS
    if f.num < 1:
      raise config_lib.ConfigError(f"--num must be >= 1, got {f.num}")
    if not (math.isfinite(f.temperature) and f.temperature >= 0):
      raise config_lib.ConfigError(f"--temperature must be a finite number >= 0 (0: greedy), "
                                   f"got {f.temperature}")
    if f.out and (not f.out.endswith(".png") or os.path.isdir(f.out)):
      raise config_lib.ConfigError(f"--out {f.out} must be a .png file to write, not a directory")
    objective = config_lib.objective_name(workdir_config(f.workdir))
    if objective == "captioning":
      for reference, caption in captions(f.workdir, f.num, f.temperature, f.seed):
        print(f"{reference} -> {caption}")
      return
    if objective in GENERATIVE:
      out = f.out or os.path.join(f.workdir, "samples", "sampled.png")
      save_grid(generate_images(f.workdir, f.num, f.seed), out)
      print(out)
      return
    if f.top_k < 0 or f.length < 1:
      raise config_lib.ConfigError(f"--top_k must be >= 0 (0: all tokens) and --length >= 1, "
                                   f"got {f.top_k} and {f.length}")
    model, params, tok = load(f.workdir)
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and f.top_k > vocab:
      raise config_lib.ConfigError(f"--top_k={f.top_k} is more than the model's {vocab} tokens")
    tokens = generate(model, params, encode(tok, f.prompt), f.length,
                      temperature=f.temperature, top_k=f.top_k, seed=f.seed,
                      use_cache=not f.no_cache)
    print(decode(tok, tokens))

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
