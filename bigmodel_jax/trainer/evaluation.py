"""Evaluation of a training run: the eval split (or every task's), and for objectives that
sample, samples scored by a judge classifier (judge.py) and a grid of them at
WORKDIR/samples/STEP.png (one row per class)."""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigmodel_jax import storage
from bigmodel_jax.data import pipeline
from bigmodel_jax.trainer import grids, judge, sharding, steps
from bigmodel_jax.trainer.build import Build

FEATURE_EXAMPLES = 10_000  # examples of each split whose judge features the distances use


class Evaluator:
  def __init__(self, config: ml_collections.ConfigDict, built: Build, state_shardings: Any,
               sources: Any, workdir: str, judge_workdir: str = ""):
    """judge_workdir: the classifier that scores an objective's samples (train.py finds it)."""
    self.config, self.plan, self.objective = config, built.plan, built.objective
    self.sources = sources
    built.plan.check_batch_size("eval_batch_size", config.eval_batch_size)
    self.workdir = workdir
    self.step = jax.jit(functools.partial(steps.eval_step, objective=built.objective,
                                          compute_dtype=built.step_options["compute_dtype"],
                                          normalize=built.step_options["normalize"]),
                        in_shardings=(state_shardings, built.plan.batch_sharding, None))
    self.scorer = None  # the judge, loaded at the first evaluation
    self.judge_workdir = judge_workdir
    if built.objective.can_sample:
      classes = built.objective.num_classes if built.objective.conditional else 1
      per_class = config.samples.per_class * (built.objective.num_classes if classes == 1 else 1)
      self.labels = np.repeat(np.arange(classes), per_class).astype(np.int32)
      self.sample = jax.jit(built.objective.sample)
      self.sample_rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), steps.EVAL_STREAM)

  def split(self, state: Any, examples: Any) -> dict[str, float]:
    sums, rows = None, []
    for i, batch in enumerate(pipeline.eval_batches(examples, self.config.eval_batch_size)):
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
    if not isinstance(self.sources.eval, dict):
      out = self.split(state, self.sources.eval)
    else:  # eval/{name}/{metric} per task or corpus, and eval/{metric} the mean over them
      per_task = {name: self.split(state, ex) for name, ex in self.sources.eval.items()}
      shared = set.intersection(*(set(m) for m in per_task.values()))
      out = {k: float(np.mean([m[k] for m in per_task.values()])) for k in sorted(shared)}
      out.update({f"eval/{name}/{k[len('eval/'):]}": v for name, m in per_task.items()
                  for k, v in m.items()})
    if self.objective.can_sample:
      out.update(self.samples(state, step))
    return out

  def samples(self, state: Any, step: int) -> dict[str, float]:
    x = self.sample({"params": state.params, **state.model_state}, self.sample_rng,
                    jnp.asarray(self.labels))
    x = np.asarray(_gather(x))
    if jax.process_index() == 0:
      rows = len(np.unique(self.labels)) if self.objective.conditional else grids.COLUMNS
      grids.save(grids.rows_of(x, self.labels, rows, grids.COLUMNS),
                 storage.join(self.workdir, "samples", f"{step}.png"))
    if self.scorer is None:  # the splits' features, once (at most FEATURE_EXAMPLES of each)
      first = lambda ex: ex.gather(np.arange(min(len(ex), FEATURE_EXAMPLES)))["inputs"]  # noqa: E731
      self.scorer = judge.SampleScorer(self.judge_workdir, self.config,
                                       first(self.sources.train), first(self.sources.eval))
    return self.scorer.score(x, self.labels if self.objective.conditional else None)


def _gather(x: jax.Array) -> Any:
  if x.is_fully_addressable:
    return x
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(x, tiled=True)
