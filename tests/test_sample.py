"""Sampling from a language model: the key/value cache changes nothing but the cost."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, small_config

from bigmodel_jax.models import decoding
from bigmodel_jax.models.transformer import DecoderLM
from bigmodel_jax.trainer import train


@pytest.fixture(scope="module", params=["learned", "rotary"])
def lm(request):
  model = DecoderLM(vocab_size=256, max_len=24, dim=32, depth=2, num_heads=4, mlp_dim=64,
                    positions=request.param)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24), jnp.int32))["params"]
  return model, jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params,
                             is_leaf=lambda x: hasattr(x, "value"))


def test_cached_decoding_logits_equal_the_full_forward_pass(lm):
  model, params = lm
  tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 20), 0, 256)
  full = model.apply({"params": params}, tokens)
  cache = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 24), jnp.int32), decode=True)["cache"]
  cache = jax.tree.map(jnp.zeros_like, cache)
  prefill, state = model.apply({"params": params, "cache": cache}, tokens[:, :5], decode=True,
                               start=0, mutable=["cache"])
  stepped = [prefill]
  for t in range(5, 20):
    logits, state = model.apply({"params": params, "cache": state["cache"]}, tokens[:, t:t + 1],
                                decode=True, start=t, mutable=["cache"])
    stepped.append(logits)
  np.testing.assert_allclose(jnp.concatenate(stepped, axis=1), full, atol=1e-4)


@pytest.mark.parametrize("temperature, top_k", [(0.0, 0), (1.0, 0), (0.7, 5)])
def test_generation_is_the_same_with_and_without_the_cache(lm, temperature, top_k):
  model, params = lm
  prompt = list(b"def f(")
  kwargs = dict(temperature=temperature, top_k=top_k, seed=3)
  cached = decoding.generate(model, params, prompt, 12, use_cache=True, **kwargs)
  uncached = decoding.generate(model, params, prompt, 12, use_cache=False, **kwargs)
  assert cached == uncached and cached[:6] == prompt and len(cached) == 18


def test_sample_command_on_a_trained_workdir(tmp_path):
  c = small_config("transformer", "pycode", total_steps=3, batch_size=16, eval_batch_size=512,
                   log_every=3, eval_every=3, checkpoint_every=3,
                   **{"data.seq_len": 32, "data.eval_split": "test", "schedule.warmup_steps": 1})
  c.model = dict(name="decoder_lm", max_len=32, dim=32, depth=1, num_heads=2, mlp_dim=64)
  train.train_and_evaluate(c, str(tmp_path / "lm"))
  outputs = []
  for extra in ([], ["--no_cache"]):
    proc = subprocess.run([sys.executable, "-m", "bigmodel_jax.sample", f"--workdir={tmp_path / 'lm'}",
                           "--prompt=import ", "--length=16", *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    outputs.append(proc.stdout)
  assert outputs[0] == outputs[1] and outputs[0].startswith("import ")
  too_long = subprocess.run([sys.executable, "-m", "bigmodel_jax.sample",
                             f"--workdir={tmp_path / 'lm'}", "--length=40"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
  assert too_long.returncode == 2 and "max_len 32" in too_long.stderr
  not_lm = subprocess.run([sys.executable, "-m", "bigmodel_jax.sample", f"--workdir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert not_lm.returncode == 2 and "not a workdir" in not_lm.stderr
  before = sorted(tmp_path.rglob("*"))
  for flag, error in {"--temperature=nan": "--temperature must be a finite number >= 0",
                      "--top_k=1000": "--top_k=1000 is more than the model's 256 tokens",
                      f"--out={tmp_path / 'lm'}": "must be a .png file to write, not a directory"
                      }.items():
    bad = subprocess.run([sys.executable, "-m", "bigmodel_jax.sample",
                          f"--workdir={tmp_path / 'lm'}", flag, "--length=4"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stdout == "", (flag, bad.stdout, bad.stderr)
    assert bad.stderr.strip().startswith("error: ") and error in bad.stderr, (flag, bad.stderr)
  assert sorted(tmp_path.rglob("*")) == before
