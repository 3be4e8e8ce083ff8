"""Evaluation of a training run: the eval split (or every task's), and for objectives that
sample, samples scored by a judge classifier (judge.py) and a grid of them at
WORKDIR/samples/STEP.png (one row per class)."""

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigmodel_jax import sharding, steps
from bigmodel_jax.build import Build
from bigmodel_jax.data import pipeline

GRID_COLUMNS = 10  # samples per row of the grid
FEATURE_EXAMPLES = 10_000  # examples of each split whose judge features the distances use


class Evaluator:
  def __init__(self, config: ml_collections.ConfigDict, b: Build, state_shardings: Any,
               sources: Any, workdir: str):
    self.config, self.plan, self.objective, self.sources = config, b.plan, b.objective, sources
    b.plan.check_batch_size("eval_batch_size", config.eval_batch_size)
    self.workdir = workdir
    self.step = jax.jit(functools.partial(steps.eval_step, objective=b.objective,
                                          compute_dtype=b.step_options["compute_dtype"],
                                          normalize=b.step_options["normalize"]),
                        in_shardings=(state_shardings, b.plan.batch_sharding, None))
    self.scorer = None  # the judge, loaded at the first evaluation
    if b.objective.can_sample:
      from bigmodel_jax import judge
      judge.check(config)
      classes = b.objective.num_classes if b.objective.conditional else 1
      per_class = config.samples.per_class * (b.objective.num_classes if classes == 1 else 1)
      self.labels = np.repeat(np.arange(classes), per_class).astype(np.int32)
      self.sample = jax.jit(b.objective.sample)
      self.sample_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), steps.EVAL_STREAM)

  def split(self, state: Any, examples: Any) -> dict[str, float]:
    sums, rows = None, []
    for i, batch in enumerate(pipeline.eval_batches(examples, self.config.eval_batch_size)):
      with self.plan.activation_context():
        out = self.step(state, sharding.global_batch(batch, self.plan.batch_sharding),
                        jnp.int32(i))
      rows.append({k: out.pop(k) for k in list(out) if k.startswith("collect/")})
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    count = max(float(sums.pop("count")), 1.0)
    metrics = {f"eval/{k}": float(v) / count for k, v in sums.items()}
    if rows and rows[0]:  # the split's rows, in order, padding dropped
      rows = {k: np.concatenate([np.asarray(_gather(r[k])) for r in rows]) for k in rows[0]}
      real = rows.pop("collect/mask") > 0
      metrics.update(self.objective.finish_collected({k: v[real] for k, v in rows.items()}))
    return self.objective.finish(metrics)

  def __call__(self, state: Any, step: int) -> dict[str, float]:
    """The eval metrics of the canonical (mesh) state after `step` updates."""
    if not self.config.tasks:
      out = self.split(state, self.sources.eval)
    else:  # eval/{task}/{metric} per task, and eval/{metric} the mean over tasks
      per_task = {name: self.split(state, ex) for name, ex in self.sources.eval.items()}
      shared = set.intersection(*(set(m) for m in per_task.values()))
      out = {k: float(np.mean([m[k] for m in per_task.values()])) for k in sorted(shared)}
      out.update({f"eval/{name}/{k[len('eval/'):]}": v for name, m in per_task.items()
                  for k, v in m.items()})
    if self.objective.can_sample:
      out.update(self.samples(state, step))
    return out

  def samples(self, state: Any, step: int) -> dict[str, float]:
    from bigmodel_jax import judge, sample
    with self.plan.activation_context():
      x = self.sample({"params": state.params, **state.model_state}, self.sample_rng,
                      jnp.asarray(self.labels))
    x = np.asarray(_gather(x))
    if jax.process_index() == 0:
      rows = len(np.unique(self.labels)) if self.objective.conditional else GRID_COLUMNS
      sample.save_grid(_grid_rows(x, self.labels, rows),
                       os.path.join(self.workdir, "samples", f"{step}.png"))
    if self.scorer is None:  # the splits' features, once (at most FEATURE_EXAMPLES of each)
      first = lambda ex: ex.gather(np.arange(min(len(ex), FEATURE_EXAMPLES)))["inputs"]  # noqa: E731
      self.scorer = judge.SampleScorer(self.config, first(self.sources.train),
                                       first(self.sources.eval))
    return self.scorer.score(x, self.labels if self.objective.conditional else None)


def _gather(x: jax.Array) -> Any:
  if x.is_fully_addressable:
    return x
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(x, tiled=True)


def _grid_rows(x: np.ndarray, labels: np.ndarray, rows: int) -> np.ndarray:
  """rows x GRID_COLUMNS samples: row r the first samples of class r (or the first samples)."""
  if rows == 1 or len(np.unique(labels)) == 1:
    n = min(len(x), rows * GRID_COLUMNS)
    return x[:n].reshape(math.ceil(n / GRID_COLUMNS), GRID_COLUMNS, *x.shape[1:])
  return np.stack([x[labels == r][:GRID_COLUMNS] for r in range(rows)])
