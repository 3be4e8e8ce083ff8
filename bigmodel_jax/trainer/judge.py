"""Sample quality without a download: a classifier trained by this codebase scores generated
samples (objectives whose samples are inputs of a classification data set).

  eval/sample_accuracy     the share of class-conditional samples the judge classifies as the
                           class they were generated for
  eval/fid_NAME            the Frechet distance between the judge's penultimate features (the
                           input of its "head" layer) of the samples and of the test split
  eval/fid_NAME_floor      the same distance between the train and the test split: what a
                           perfect generator of the data would score (finite samples)

The judge is config.samples.judge (a workdir of a classifier trained on the same data set with
the same scaling), or "": the pinned classifier of PINNED for the data set, trained on first use
(train.py, before the run writes anything) into $BIGMODEL_JAX_CACHE (default
~/.cache/bigmodel_jax)/judges/NAME-HASH and reused after.
"""

import functools
import hashlib
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigmodel_jax import config as config_lib
from bigmodel_jax import storage
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.runs import load

# data set -> the judge's config: the tutorial CNN on digits (configs/digits.py:cnn, ~98% test
# accuracy), the reference CNN on MNIST-1D (configs/mnist1d.py:cnn, ~94%).
PINNED: dict[str, dict[str, Any]] = {
    "digits": dict(
        model=dict(name="cnn", channels=(32, 64, 64), kernel_sizes=(3, 3, 3), padding="SAME",
                   pool=(2, 2, 1), dense=(64,)),
        data=dict(name="digits", scale=1 / 16, cache=True), batch_size=64, eval_batch_size=360,
        total_steps=700, optimizer=dict(name="adamw", learning_rate=3e-3, weight_decay=1e-4),
        schedule=dict(name="warmup_cosine", warmup_steps=50)),
    "mnist1d": dict(
        model=dict(name="cnn", channels=(25, 25, 25), kernel_sizes=(5, 3, 3), strides=2,
                   padding="1", pool=(1, 1, 1), dense=()),
        data=dict(name="mnist1d", input_key="x", cache=True), batch_size=100,
        eval_batch_size=1000, total_steps=8000,
        optimizer=dict(name="adamw", learning_rate=1e-2, weight_decay=0.05),
        schedule=dict(name="cosine")),
}


JUDGE_VERSION = 1


def pinned_config(data_name: str, data_dir: str = "") -> ml_collections.ConfigDict:
  if data_name not in PINNED:
    raise ConfigError(f"no pinned sample judge for data set '{data_name}' (pinned: "
                      f"{', '.join(PINNED)}): set samples.judge to a classifier's workdir")
  c = config_lib.default_config()
  c.update_from_flattened_dict(config_lib.flatten(PINNED[data_name]))
  c.data.data_dir = data_dir
  c.log_every, c.eval_every = 100, c.total_steps
  c.checkpoint_every = c.total_steps
  return c


def check(config: ml_collections.ConfigDict) -> None:
  """Before a run writes anything: its judge exists, or there is a pinned one to train."""
  if config.samples.judge:
    if not storage.isfile(storage.join(config.samples.judge, "results.json")):
      raise ConfigError(f"samples.judge={config.samples.judge} is not a finished run's workdir "
                        "(no results.json)")
  else:
    pinned_config(config.data.name)


def pinned_workdir(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, str]:
  """The pinned judge of config's data set: its config and the workdir it is trained into (a
  hash of its pinned settings names it: a key added to the default config does not retrain it;
  bump JUDGE_VERSION when a default it trains with changes). train.py trains it there on first
  use."""
  judge = pinned_config(config.data.name, config.data.data_dir)
  digest = hashlib.sha256(json.dumps({"version": JUDGE_VERSION, **PINNED[config.data.name]},
                                     sort_keys=True).encode()).hexdigest()[:12]
  return judge, os.path.join(storage.cache_dir(), "judges", f"{config.data.name}-{digest}")


class Judge:
  """A trained classifier's logits and penultimate features."""

  def __init__(self, workdir: str, data_config: ml_collections.ConfigDict):
    judge = load.load(workdir)
    for key in ("name", "scale", "mean", "std", "input_key", "image_size"):
      if judge.config.data[key] != data_config[key]:
        raise ConfigError(f"sample judge {workdir} was trained on data.{key}="
                          f"{judge.config.data[key]!r}, this run reads {data_config[key]!r}")
    if set(judge.variables) != {"params"}:
      raise ConfigError(f"sample judge {workdir}: model '{judge.config.model.name}' keeps state "
                        f"({', '.join(k for k in judge.variables if k != 'params')}); use one "
                        "without")
    self.model, self.num_classes = judge.model, judge.num_outputs
    self.params = jax.device_put(judge.variables["params"], jax.devices()[0])
    self.workdir = workdir

  def features_and_logits(self, x: np.ndarray, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    feats, logits = zip(*(jax.device_get(_features_and_logits(self.model, self.params,
                                                              jnp.asarray(x[i:i + batch])))
                          for i in range(0, len(x), batch)))
    return np.concatenate(feats).astype(np.float64), np.concatenate(logits)


@functools.partial(jax.jit, static_argnums=0)
def _features_and_logits(model: nn.Module, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  captured = {}

  def interceptor(next_fun, args, kwargs, context):
    if context.module.name == "head" and context.method_name == "__call__":
      captured["features"] = args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    logits = model.apply({"params": params}, x, train=False)
  return captured["features"].reshape(x.shape[0], -1), logits


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)) of two feature sets (rows). The trace of
  the root is taken as that of the symmetric C_a^(1/2) C_b C_a^(1/2) (same eigenvalues), by
  eigendecompositions: stable when features are constant (dead ReLUs make C singular)."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  w, v = np.linalg.eigh(cov_a)
  root_a = (v * np.sqrt(np.maximum(w, 0))) @ v.T
  inner = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
  trace_root = np.sum(np.sqrt(np.maximum(inner, 0)))
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


class SampleScorer:
  """Scores a run's samples against its data: features of the test and train splits are
  computed once."""

  def __init__(self, judge_workdir: str, config: ml_collections.ConfigDict, train_x: np.ndarray,
               test_x: np.ndarray):
    self.judge = Judge(judge_workdir, config.data)
    self.name = config.data.name
    self.test_features, _ = self.judge.features_and_logits(test_x)
    train_features, _ = self.judge.features_and_logits(train_x)
    self.floor = frechet_distance(train_features, self.test_features)

  def score(self, samples: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
    features, logits = self.judge.features_and_logits(samples)
    out = {f"eval/fid_{self.name}": frechet_distance(features, self.test_features),
           f"eval/fid_{self.name}_floor": self.floor}
    if labels is not None:
      out["eval/sample_accuracy"] = float(np.mean(np.argmax(logits, -1) == labels))
    return out
