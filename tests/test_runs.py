"""The one loader of a workdir (runs/load.py): a workdir written before newer config keys existed
reads through every reader of workdirs (resume, init_from, the distillation teacher, the sample
judge, predict, sample, quantize, convert --to, report), each key counting as its default."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, small_config

from bigmodel_jax.experiments import reports
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.inference import predict, quantize, samples
from bigmodel_jax.pretrained import convert
from bigmodel_jax.runs import load
from bigmodel_jax.trainer import build, judge, train

# Keys the defaults gained over the project's life; a workdir of an older version lacks them.
NEWER = ["data.path", "data.workers", "lora", "steps_per_call", "data.image_size"]
TINY = dict(total_steps=6, log_every=3, eval_every=6, checkpoint_every=6,
            **{"schedule.warmup_steps": 1})


def _older(workdir) -> None:
  """Removes NEWER from WORKDIR/config.json, as an older version wrote it."""
  path = os.path.join(workdir, "config.json")
  config = json.loads(open(path).read())
  for key in NEWER:
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node.pop(leaf)
  open(path, "w").write(json.dumps(config))


@pytest.fixture(scope="module")
def older_classifier(tmp_path_factory):
  """A digits MLP's finished workdir, its config.json as an older version wrote it."""
  c = small_config("mlp", "digits", total_epochs=None, **TINY)
  workdir = str(tmp_path_factory.mktemp("runs") / "older")
  train.train_and_evaluate(c, workdir)
  _older(workdir)
  return workdir, c


def test_an_older_workdir_loads_with_the_newer_keys_defaults(older_classifier):
  workdir, c = older_classifier
  run = load.load(workdir)
  assert run.config.data.path == "" and run.config.lora.rank == 0 and run.config.steps_per_call == 1
  assert set(run.variables) == {"params"} and run.num_outputs == 10
  with pytest.raises(ConfigError, match="no config.json in .*: not a workdir"):
    load.load(os.path.dirname(workdir))


def test_an_older_workdir_resumes_warm_starts_teaches_and_judges(older_classifier, tmp_path):
  workdir, c = older_classifier
  resumed = train.train_and_evaluate(c, workdir)  # the same command again: nothing to train
  assert resumed["start_step"] == 6
  warm = train.train_and_evaluate(small_config("mlp", "digits", total_epochs=None, init_from=workdir,
                                               **TINY), str(tmp_path / "warm"))
  assert warm["step"] == 6
  student = small_config("mlp", "digits", total_epochs=None, **{"distill.teacher": workdir})
  b = build.build(student, load.load(workdir).example, 10)
  teacher = b.objective.preset_state["teacher"]
  assert np.array_equal(teacher["params"]["head"]["kernel"],
                        load.load(workdir).variables["params"]["head"]["kernel"])
  assert judge.Judge(workdir, c.data).num_classes == 10


def test_an_older_workdir_predicts_quantizes_and_reports(older_classifier, tmp_path):
  workdir, c = older_classifier
  x = np.zeros((3, 8, 8, 1), np.float32)
  assert predict.outputs(workdir, x).shape == (3, 10)
  results = quantize.quantize_workdir(workdir, str(tmp_path / "int8"))
  assert results["eval/accuracy"] > 0 and load.load(str(tmp_path / "int8")).num_outputs == 10
  runs = reports.find_runs(os.path.dirname(workdir))
  assert [r["config"]["data.path"] for r in runs if r["name"] == "older"] == [""]


def test_an_older_language_model_samples_and_a_converted_one_exports(tmp_path):
  c = small_config("transformer", "pycode", total_steps=2, batch_size=16, eval_batch_size=512,
                   log_every=2, eval_every=2, checkpoint_every=2,
                   **{"data.seq_len": 32, "data.eval_split": "test", "schedule.warmup_steps": 1})
  c.model = dict(name="decoder_lm", max_len=32, dim=32, depth=1, num_heads=2, mlp_dim=64)
  train.train_and_evaluate(c, str(tmp_path / "lm"))
  _older(tmp_path / "lm")
  text = samples.sample(str(tmp_path / "lm"), prompt="def ", length=8)
  assert text.startswith("def ") and len(text.encode()) >= 4
  converted = tmp_path / "gpt2"
  convert.convert_in(os.path.join(REPO, "tests", "fixtures", "pretrained", "gpt2"),
                     small_config("gpt2_tiny", "text"), str(converted))
  _older(converted)
  assert convert.convert_out(str(converted), "hf", str(tmp_path / "hf"))["tensors"] > 0
  shutil.rmtree(tmp_path / "hf")


def test_a_lora_run_loads_merged_and_computes_what_it_trained(tmp_path):
  """The loader gives a LoRA run as the plain model with the adapters merged into the kernels
  (init_from, predict, export and quantize all read it so): its outputs are the adapted
  model's on the run's own parameters."""
  import flax
  from bigmodel_jax.compression import qwix_wrap
  from bigmodel_jax.runs import checkpoint
  c = small_config("mlp", batch_size=32, **{"model.hidden": (24, 24), "lora.rank": 2,
                                            "lora.modules": "hidden", **TINY})
  train.train_and_evaluate(c, str(tmp_path / "lora"))
  run = load.load(str(tmp_path / "lora"))
  names = flax.traverse_util.flatten_dict(run.variables["params"], sep="/")
  assert names and not any(qwix_wrap.is_adapter(n) for n in names)
  adapted = qwix_wrap.wrap(c, run.model)
  abstract = load.abstract_variables(adapted, run.example)
  trained = checkpoint.restore_variables(str(tmp_path / "lora"), {"params": abstract["params"],
                                                                  "model_state": {}})["params"]
  # qwix's LoRA needs JAX arrays: numpy adapters are skipped, numpy inputs refused
  trained = flax.traverse_util.unflatten_dict(
      {k: jnp.asarray(v) for k, v in flax.traverse_util.flatten_dict(trained).items()})
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 40)), jnp.float32)
  np.testing.assert_allclose(run.model.apply(run.variables, x, train=False),
                             adapted.apply({"params": trained}, x, train=False), atol=2e-4)
