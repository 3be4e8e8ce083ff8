"""Multimodal: the paired digits data sets, the fusion structures and the captioner through the
one trainer; 8 devices under dp and fsdp against 1; exact resume after SIGKILL; bad input.
Contrastive dual encoders: test_contrastive.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import first_losses, run_main, small_config

from bigmodel_jax import models
from bigmodel_jax.data import digits, paired_digits, pipeline
from bigmodel_jax.data.words import Words
from bigmodel_jax.objectives.captioning import Captioning, teacher_forced
from bigmodel_jax.trainer import build as build_lib


def _tiny(arg, **overrides):
  model = {"dim": 16, "num_heads": 2, "mlp_dim": 32, "depth": 1}
  if arg in ("clip", "siglip", "lit"):
    model["image_tower"] = {"name": "mlp", "hidden": (32,)}
  if arg == "captioner":
    model["decoder_depth"] = 1
  return small_config(arg, "multimodal", batch_size=32, eval_batch_size=200, total_steps=30,
                      log_every=10, eval_every=30, checkpoint_every=10,
                      **{"schedule.warmup_steps": 5},
                      **{f"model.{k}": v for k, v in model.items()}, **overrides)


def test_scenes_come_from_their_splits_images_and_answer_their_questions():
  d = digits.generate()
  words = Words(tfds.builder("digit_scenes").info.metadata["vocabulary"])
  for split, (x, y) in {"train": (d["x"], d["y"]), "test": (d["x_test"], d["y_test"])}.items():
    source = tfds.data_source("digit_scenes", split=split)
    assert len(source) == paired_digits.SCENES[split]
    kinds = set()
    for i in range(0, len(source), len(source) // 50):
      e = source[i]
      left, right = e["source"]
      assert (e["image"][:, :8] == x[left]).all() and (e["image"][:, 8:] == x[right]).all()
      question = words.decode(e["question"])
      kind = next(k for k, (phrasings, _) in paired_digits.QUESTIONS.items() if question in phrasings)
      kinds.add(kind)
      answer = paired_digits.QUESTIONS[kind][1](int(y[left]), int(y[right]))
      assert paired_digits.ANSWERS[e["answer"]] == answer, (split, i, question)
    assert len(kinds) == len(paired_digits.QUESTIONS)


def test_captions_name_their_images_digit():
  words = Words(tfds.builder("digit_captions").info.metadata["vocabulary"])
  source = tfds.data_source("digit_captions", split="test")
  assert len(source) == 360
  for i in range(0, 360, 37):
    e = source[i]
    texts = [words.decode(c) for c in e["captions"]]
    name = paired_digits.CLASS_NAMES[e["label"]]
    assert texts == [t.format(name) for t in paired_digits.CAPTION_TEMPLATES]


@pytest.mark.parametrize("fusion", models.multimodal.FUSIONS)
def test_each_fusion_reads_the_modalities_it_claims(fusion):
  model = models.multimodal.FusionClassifier(num_classes=21, vocab_size=30, fusion=fusion, dim=16,
                                             depth=1, num_heads=2, mlp_dim=32)
  rng = np.random.default_rng(0)
  inputs = {"image": jnp.asarray(rng.random((4, 8, 16, 1)), jnp.float32),
            "text": jnp.asarray(rng.integers(3, 30, (4, 12)), jnp.int32).at[:, 8:].set(0)}
  variables = model.init(jax.random.PRNGKey(0), inputs)
  out = model.apply(variables, inputs)
  assert out.shape == (4, 21)
  other_image = model.apply(variables, {**inputs, "image": inputs["image"][::-1]})
  other_text = model.apply(variables, {**inputs, "text": inputs["text"][::-1]})
  assert np.allclose(other_image, out) == (fusion == "text_only")
  assert np.allclose(other_text, out) == (fusion == "image_only")


def test_fsdp_on_8_devices_gives_the_first_losses_of_1_device():
  # float32; only the order of float reductions differs between the programs
  one, _ = first_losses(_tiny("cross_attention"), jax.devices()[:1])
  for preset in ("fsdp",):  # shards the batch as dp does, and the parameters (suite time)
    eight, _ = first_losses(_tiny("cross_attention", sharding=preset))
    np.testing.assert_allclose(eight, one, rtol=1e-4, err_msg=preset)


def test_captioner_decodes_the_same_with_and_without_the_cache():
  c = _tiny("captioner")
  sources = pipeline.load(c.data)
  b = build_lib.build(c, build_lib.example_of(sources.train), sources.num_outputs, 100, mesh=False)
  batch = sources.eval.gather(np.arange(8))
  inputs = jax.tree.map(jnp.asarray, batch["inputs"])
  variables = b.model.init(jax.random.PRNGKey(1), inputs)
  cached = jax.jit(b.objective.caption, static_argnums=2)(variables, inputs["image"], 8)
  tokens = jnp.zeros((8, 8), jnp.int32)  # no cache: the whole prefix again for every token
  apply = jax.jit(b.model.apply)
  for t in range(8):
    logits = apply(variables, {"image": inputs["image"], "text": teacher_forced(tokens)})
    tokens = tokens.at[:, t].set(jnp.argmax(logits[:, t], -1))
  after_eos = jnp.cumsum(jnp.cumsum(tokens == 2, 1), 1) > 1  # PAD after the first EOS
  np.testing.assert_array_equal(cached, jnp.where(after_eos, 0, tokens))
  assert isinstance(b.objective, Captioning)


@pytest.mark.parametrize("args, message", [
    (["--config=configs/multimodal.py:cross_attention", "--config.data.name=digits",
      "--config.data.kind=classification"], "reads an image and a text"),
    (["--config=configs/multimodal.py:clip", "--config.model.vocab_size=512"],
     "tokenizer"),
    (["--config=configs/multimodal.py:lit"], "init_into='image' needs init_from"),
    (["--config=configs/digits.py:cnn", "--config.data.kind=paired"], "reads one input"),
    (["--config=configs/multimodal.py:clip", "--config.grad_accum_steps=2"], "whole batch"),
])
def test_bad_multimodal_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
  workdir = tmp_path / "w"
  r = run_main(*args, f"--workdir={workdir}")
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and message in lines[0], r.stderr
  assert not workdir.exists()
