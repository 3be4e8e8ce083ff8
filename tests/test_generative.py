"""Objectives beyond one cross entropy, through the one trainer: VAE (ELBO and IWAE bounds),
diffusion (DDPM, DDIM samples); samples scored by a judge classifier; the sample command. GANs
and the same first losses on 1 and 8 devices: tests/test_gan.py."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, generative_config, train_losses

from bigmodel_jax import config_rules
from bigmodel_jax import models, objectives
from bigmodel_jax.data import pipeline
from bigmodel_jax.trainer import train

TINY = {  # model overrides: small and quick to compile
    "vae": dict(hidden=(64,), latents=8),
    "cvae": dict(hidden=(64,), channels=(8, 16), latents=8),
    "gan": dict(latents=16, generator_channels=(32, 16), discriminator_channels=(16, 32)),
    "ddpm": dict(channels=(8, 16), emb_dim=16, groups=4),
}


def _tiny(arg, judge, steps=20, **overrides):
  model = {k[len("model."):]: v for k, v in overrides.items() if k.startswith("model.")}
  overrides = {"total_steps": steps, "batch_size": 32, "log_every": min(steps, 10),
               "eval_every": steps, "checkpoint_every": steps,
               **{k: v for k, v in overrides.items() if not k.startswith("model.")}}
  c = generative_config(arg, judge, **overrides)
  c.model.update({**TINY[arg], **model})
  c.schedule.warmup_steps = min(c.schedule.warmup_steps, 1)
  if arg == "ddpm":
    c.objective.sample_steps = 5
  if arg in ("vae", "cvae"):
    c.objective.iwae_samples = 10
  return c


def test_every_registered_objective_is_a_class_of_the_package():
  for name in config_rules.OBJECTIVES:
    assert issubclass(objectives.objective_class(name), objectives.Objective), name


def test_the_binomial_likelihood_is_a_distribution_over_the_17_levels():
  from bigmodel_jax.objectives.vae import VAE
  vae = VAE(None, (1,), 10, likelihood="binomial", levels=16)
  x = jnp.arange(17.0)[:, None] / 16  # every value a pixel can take
  for logit in (-3.0, 0.0, 0.7, 5.0):
    log_p = vae._log_px({}, jnp.full((17, 1), logit), x)
    assert abs(float(jax.nn.logsumexp(log_p))) < 1e-5


@pytest.mark.parametrize("arg", ["cvae", "gan", "ddpm"])
def test_new_networks_name_the_logical_axes_of_every_parameter(arg):
  c = _tiny(arg, "")
  model = models.build(c.model, 10)
  boxed = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)},
                                            jnp.zeros((2, 8, 8, 1)), train=False))
  leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)


def test_vae_trains_and_the_importance_weighted_bound_is_tighter(tmp_path, digits_judge):
  c = _tiny("vae", digits_judge, steps=200, log_every=20)
  results = train.train_and_evaluate(c, str(tmp_path))
  losses = train_losses(tmp_path)
  assert losses[-1] < 0.7 * losses[0]
  # nats per example: log p(x) >= IWAE bound >= ELBO, so -ELBO >= NLL_iwae
  assert 0 < results["eval/nll_iwae"] < results["eval/nelbo"] == results["eval/loss"]
  assert results["eval/fid_digits"] > results["eval/fid_digits_floor"] > 0
  assert "eval/sample_accuracy" not in results  # not class-conditional
  assert os.path.isfile(tmp_path / "samples" / "200.png")


def test_the_judge_scores_real_images_as_near_perfect_samples(digits_judge):
  from bigmodel_jax.trainer import judge
  c = _tiny("gan", digits_judge)
  sources = pipeline.load(c.data)
  train_x = sources.train.gather(np.arange(len(sources.train)))["inputs"]
  test = sources.eval.gather(np.arange(len(sources.eval)))
  scorer = judge.SampleScorer(c.samples.judge, c, train_x, test["inputs"])
  real = scorer.score(test["inputs"], test["label"])
  assert real["eval/sample_accuracy"] > 0.9 and real["eval/fid_digits"] < 1e-6
  shuffled = scorer.score(test["inputs"], np.random.default_rng(0).permutation(test["label"]))
  assert shuffled["eval/sample_accuracy"] < 0.3
  noise = scorer.score(np.random.default_rng(0).uniform(size=test["inputs"].shape), None)
  assert noise["eval/fid_digits"] > 10 * real["eval/fid_digits_floor"]


def test_ddpm_trains_and_the_sample_command_draws_a_grid(tmp_path, digits_judge):
  from PIL import Image
  workdir = tmp_path / "ddpm"
  c = _tiny("ddpm", digits_judge, steps=10, **{"model.channels": (8,)})
  results = train.train_and_evaluate(c, str(workdir))
  assert np.isfinite(results["eval/loss"]) and 0 <= results["eval/sample_accuracy"] <= 1
  assert (workdir / "samples" / "10.png").is_file()
  out = tmp_path / "grid.png"
  proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.sample", f"--workdir={workdir}",
                         "--num=3", f"--out={out}"], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr
  zoom, cell = 4, 8 + 1  # 8x8 samples and a 1-pixel gap, magnified 4 times
  assert Image.open(out).size == ((3 * cell + 1) * zoom, (10 * cell + 1) * zoom)  # 10 classes
