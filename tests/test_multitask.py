"""Multi-task training (config.tasks): the weighted mixture, a head per task, per-task metrics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import small_config

from bigmodel_jax import models
from bigmodel_jax.data import pipeline, tasks
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.trainer import planning, train


def _two_tasks(**overrides):
  """MNIST-1D twice, as tasks a (weight 3) and b (weight 1): offline, and each head must learn."""
  c = small_config("cnn", "mnist1d", **{"batch_size": 40, "eval_batch_size": 512,
                                        "schedule.name": "constant", **overrides})
  c.tasks.a = {"weight": 3.0}  # data overrides: none, so config.data (mnist1d)
  c.tasks.b = {"weight": 1.0, "name": "mnist1d"}
  c.task_features = 32
  return c


def test_mixture_fills_every_batch_by_weight_and_resumes_exactly():
  c = _two_tasks()
  sources = tasks.load(c)
  assert sources.num_outputs == (10, 10) and sorted(sources.eval) == ["a", "b"]
  assert len(sources.train) == 8000
  it = pipeline.train_iterator(sources.train, 40, seed=0)
  seen = {0: [], 1: []}
  layouts = set()  # where task b's rows are in each batch
  for _ in range(100):  # within the first epoch of each: 3,000 of a's examples, 1,000 of b's
    batch = next(it)
    task = batch["inputs"]["task"]
    assert batch["inputs"]["x"].shape == (40, 40)
    assert np.bincount(task, minlength=2).tolist() == [30, 10]
    layouts.add(tuple(np.flatnonzero(task == 1)))
    for t in (0, 1):
      seen[t].extend(map(tuple, np.round(batch["inputs"]["x"][task == t], 5)))
  assert len(set(seen[0])) == 3000 and len(set(seen[1])) == 1000  # none repeats within an epoch
  # The tasks' rows are shuffled together, anew in every batch (40 choose 10 ways: a repeat
  # among 100 batches is all but impossible).
  assert len(layouts) == 100
  state = it.get_state()
  ahead = [next(it) for _ in range(2)]
  resumed = pipeline.train_iterator(sources.train, 40, seed=0)
  resumed.set_state(state)
  for want in ahead:
    jax.tree.map(np.testing.assert_array_equal, next(resumed), want)


def test_a_task_head_learns_only_from_its_own_rows():
  c = _two_tasks()
  model = models.build_for(c, (10, 4))
  x = jnp.ones((6, 40))
  inputs = {"x": x, "task": jnp.array([0, 0, 0, 1, 1, 1], jnp.int32)}
  params = nn.unbox(model.init(jax.random.PRNGKey(0), inputs)["params"])
  assert sorted(params) == ["head_a", "head_b", "trunk"]
  logits = model.apply({"params": params}, inputs)
  assert logits.shape == (6, 10) and bool(jnp.all(logits[3:, 4:] < -1e8))  # b has 4 classes
  only_a = {"x": x, "task": jnp.zeros(6, jnp.int32)}
  grads = jax.grad(lambda p: model.apply({"params": p}, only_a).sum())(params)
  assert float(jnp.abs(grads["head_a"]["kernel"]).sum()) > 0
  assert float(jnp.abs(grads["head_b"]["kernel"]).sum()) == 0


def test_multitask_run_learns_each_task_and_reports_per_task_metrics(tmp_path):
  c = _two_tasks(total_steps=150, log_every=50, eval_every=150, checkpoint_every=150)
  results = train.train_and_evaluate(c, str(tmp_path))
  for t in ("a", "b"):
    assert results[f"eval/{t}/accuracy"] > 0.4, results  # chance: 0.1
  np.testing.assert_allclose(results["eval/accuracy"],
                             (results["eval/a/accuracy"] + results["eval/b/accuracy"]) / 2)
  assert results["eval/loss"] < 2.0


def test_catalogue_multitask_config_trains_and_plans_on_mock_data(tmp_path):
  c = small_config("cnn", "multitask", total_steps=2, batch_size=24, eval_batch_size=16,
                   log_every=1, eval_every=2, checkpoint_every=2, **{"schedule.warmup_steps": 1})
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    results = train.train_and_evaluate(c, str(tmp_path))
    plan = planning.dry_run(c)
  assert {f"eval/{t}/accuracy" for t in ("fashion", "kmnist", "mnist")} <= set(results)
  assert plan["num_params"] == results["num_params"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c.tasks.b.update({"name": "digits", "input_key": "image"}),
     "tasks must share one input shape"),
    (lambda c: c.tasks.b.update({"nmae": "digits"}), "tasks.b: 'nmae' is not a data key"),
    (lambda c: c.tasks.b.update({"weight": 0.0}), "tasks.b.weight must be a positive number"),
    (lambda c: c.tasks.b.update({"weight": 0.01}), "leaves no rows of a batch to task b"),
    (lambda c: c.tasks.b.update({"kind": "lm"}), "multi-task training takes classification"),
])
def test_bad_tasks_are_config_errors(tmp_path, change, message):
  c = _two_tasks(total_steps=2)
  change(c)
  with pytest.raises(ConfigError, match=message):
    train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
