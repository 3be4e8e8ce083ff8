"""Multi-task input: several classification data sets trained together on one shared trunk.

config.tasks names the tasks; each is config.data with the task's overrides, plus a weight:

  c.tasks.mnist = {"weight": 2.0, "name": "mnist"}
  c.tasks.fashion = {"weight": 1.0, "name": "fashion_mnist"}

Every global batch holds a fixed number of examples of each task, in proportion to the weights
(largest remainder: round(batch_size * w / sum(w)) rows), shuffled together; each task walks its
own endless shuffled order (mixture.FixedRows), so the mixture resumes exactly like one data
set. Inputs become {"x": the task's inputs, "task": int32 task id}, the task id being the index
of the task's name in sorted order; models/multitask.py routes each row to its task's head.
Evaluation runs over each task's eval split separately. With no tasks, config.data is the one
data set (pipeline.load).
"""

from typing import Any

import jax
import ml_collections
import numpy as np

from bigmodel_jax import config as config_lib
from bigmodel_jax.data import mixture, pipeline, records
from bigmodel_jax.data.source import Sources
from bigmodel_jax.faults import ConfigError


def task_configs(config: ml_collections.ConfigDict) -> dict[str, tuple[float, ml_collections.ConfigDict]]:
  """Sorted task name -> (weight, its data config: config.data with the task's overrides)."""
  data_keys = sorted(config.data.to_dict())
  out = {}
  for name in sorted(config.tasks):
    spec = config.tasks[name]
    if not isinstance(spec, ml_collections.ConfigDict):
      raise ConfigError(f"tasks.{name} must be a dict of a weight and data overrides "
                        f"(e.g. {{'weight': 1.0, 'name': 'mnist'}}), got {spec!r}")
    overrides = spec.to_dict()
    weight = overrides.pop("weight", 1.0)
    for key in overrides:
      if key not in data_keys:
        near = config_lib.nearest_keys(key, data_keys)
        raise ConfigError(f"tasks.{name}: '{key}' is not a data key (nor weight)"
                          + (f"; nearest: {', '.join(near)}" if near else ""))
    if not isinstance(weight, (int, float)) or not weight > 0:
      raise ConfigError(f"tasks.{name}.weight must be a positive number, got {weight!r}")
    cfg = ml_collections.ConfigDict(config.data.to_dict())
    cfg.update(overrides)
    if not cfg.name:
      raise ConfigError(f"tasks.{name} names no data set: set tasks.{name}.name")
    if cfg.kind != "classification":
      raise ConfigError(f"tasks.{name}: multi-task training takes classification data sets, "
                        f"not data.kind '{cfg.kind}'")
    out[name] = (float(weight), cfg)
  return out


def rows_per_task(weights: list[float], batch_size: int, names: list[str]) -> list[int]:
  """Rows of each global batch per task: proportional to the weights, largest remainder."""
  shares = np.asarray(weights) / sum(weights) * batch_size
  rows = np.floor(shares).astype(int)
  for i in np.argsort(-(shares - rows), kind="stable")[:batch_size - rows.sum()]:
    rows[i] += 1
  if (rows == 0).any():
    empty = ", ".join(n for n, r in zip(names, rows) if r == 0)
    raise ConfigError(f"batch_size={batch_size} leaves no rows of a batch to task {empty} at "
                      f"these weights; raise its weight or the batch size")
  return rows.tolist()


class TaskExamples:
  """One task's examples; inputs become {"x": inputs, "task": B int32 (this task's id)}."""

  def __init__(self, examples: Any, task_id: int):
    self.examples, self.task_id = examples, task_id
    self.random = getattr(examples, "random", False)
    self.in_memory = getattr(examples, "in_memory", False)

  def __len__(self) -> int:
    return len(self.examples)

  def gather(self, indices: np.ndarray, rngs: records.Rngs = None) -> records.Batch:
    batch = self.examples.gather(indices, rngs)
    task = np.full(len(indices), self.task_id, np.int32)
    return {**batch, "inputs": {"x": batch["inputs"], "task": task}}


class Tasks(mixture.Mixture):
  """The tasks' training splits as one index space, each global batch filled in the weights'
  proportions (mixture.FixedRows)."""

  def sampler(self, global_batch: int, seed: int) -> mixture.FixedRows:
    return mixture.FixedRows(self, rows_per_task(self.weights, global_batch, self.names), seed)


def load(config: ml_collections.ConfigDict) -> Sources:
  """The experiment's data: config.data alone, or with config.tasks a Mixture to train on and
  {task name: eval examples} to evaluate on, num_outputs a tuple of class counts per task."""
  if not config.tasks:
    return pipeline.load(config.data)
  names, weights, train, evals, outputs = [], [], [], {}, []
  shapes = {}
  for t, (name, (weight, cfg)) in enumerate(task_configs(config).items()):
    sources = pipeline.load(cfg)
    train.append(TaskExamples(sources.train, t))
    evals[name] = TaskExamples(sources.eval, t)
    names.append(name)
    weights.append(weight)
    outputs.append(sources.num_outputs)
    x = sources.train.gather(np.zeros(1, np.int64))["inputs"]
    shapes[name] = (tuple(x.shape[1:]), str(x.dtype))
  if len(set(shapes.values())) > 1:
    raise ConfigError("tasks must share one input shape for the shared trunk; got "
                      + ", ".join(f"{n} {s} {d}" for n, (s, d) in shapes.items()))
  return Sources(train=Tasks(train, names, weights), eval=evals,
                          num_outputs=tuple(outputs))


def input_spec(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """pipeline.input_spec for the experiment: with tasks, {"x", "task"} and per-task class counts."""
  if not config.tasks:
    return pipeline.input_spec(config.data)
  specs = [pipeline.input_spec(cfg) for _, cfg in task_configs(config).values()]
  if len({(s.shape, s.dtype) for s, _ in specs}) > 1:
    raise ConfigError("tasks must share one input shape for the shared trunk; got "
                      + ", ".join(str(s.shape[1:]) for s, _ in specs))
  task = jax.ShapeDtypeStruct((1,), np.int32)
  return {"x": specs[0][0], "task": task}, tuple(n for _, n in specs)
