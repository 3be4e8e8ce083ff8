"""Contrastive dual encoders (CLIP, SigLIP, LiT): the losses, caption picks that resume
exactly, 8 devices under dp and fsdp against 1, LiT's warm start into a locked tower."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from helpers import first_losses, run_main
from test_multimodal import _tiny

from bigmodel_jax.data import pipeline


def test_contrastive_losses_match_their_formulas():
  from bigmodel_jax.objectives.contrastive import Contrastive

  class Fixed:  # a "model" whose embeddings are given: 3 pairs, the last two texts identical
    def apply(self, variables, inputs, **kwargs):
      return inputs["image"], inputs["image"], jnp.log(2.0), jnp.float32(-1.0)

  emb = jnp.eye(3)
  batch = {"inputs": {"image": emb, "text": jnp.asarray([[3, 2], [4, 2], [4, 2]])},
           "weights": jnp.ones(3)}
  s = 2.0  # exp(log 2)
  for kind in ("softmax", "sigmoid"):
    loss, _, _ = Contrastive(Fixed(), (), 10, loss=kind).loss({}, {}, batch, None)
    if kind == "softmax":  # row 0: one positive; rows 1, 2: half on each identical text
      z = np.log(np.exp(s) + 2)
      row0 = z - s
      row12 = z - 0.5 * s
      expected = row0 + 2 * row12  # image->text and text->image are symmetric here
    else:  # sum over pairs of -log sigmoid(sign * (s * cos - 1))
      pos = -np.log(1 / (1 + np.exp(-(s - 1))))
      pos_off = -np.log(1 / (1 + np.exp(1)))  # identical texts, cos 0: positive
      neg = -np.log(1 / (1 + np.exp(-1)))  # negative, cos 0: -(0 - 1) = 1
      expected = (pos + 2 * neg) + 2 * (pos + pos_off + neg)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5, err_msg=kind)


def test_caption_picks_are_random_per_example_and_repeat_on_resume():
  c = _tiny("clip")
  examples = pipeline.load(c.data).train
  it = pipeline.train_iterator(examples, 64, seed=3)
  next(it)
  state = it.get_state()
  after = [next(it) for _ in range(2)]
  resumed = pipeline.train_iterator(examples, 64, seed=3)
  resumed.set_state(state)
  for a, b in zip(after, [next(resumed) for _ in range(2)]):
    np.testing.assert_array_equal(a["inputs"]["text"], b["inputs"]["text"])
    np.testing.assert_array_equal(a["label"], b["label"])
  # every template is picked (4 captions per image), and the pick is not the example's index
  texts = {tuple(t) for batch in after for t in batch["inputs"]["text"]}
  assert len(texts) > 20
  assert "references" not in after[0]


def test_fsdp_on_8_devices_gives_the_first_losses_of_1_device():
  # float32; only the order of float reductions differs between the programs
  one, _ = first_losses(_tiny("siglip"), jax.devices()[:1])
  for preset in ("fsdp",):  # shards the batch as dp does, and the parameters (suite time)
    eight, _ = first_losses(_tiny("siglip", sharding=preset))
    np.testing.assert_allclose(eight, one, rtol=1e-4, err_msg=preset)


def test_lit_starts_its_image_tower_from_a_classifier_and_keeps_it_locked(tmp_path):
  small = ["--config.model.channels=(8, 8, 8)", "--config.model.dense=(16,)"]
  classifier = tmp_path / "cnn"
  r = run_main("--config=configs/digits.py:cnn", f"--workdir={classifier}", *small,
               "--config.total_epochs=0.44", "--config.schedule.warmup_steps=2")  # 10 steps of 64
  assert r.returncode == 0, r.stderr
  lit = tmp_path / "lit"
  r = run_main("--config=configs/multimodal.py:lit", f"--workdir={lit}",
               f"--config.init_from={classifier}",
               *(a.replace("model.", "model.image_tower.") for a in small),
               "--config.total_steps=10", "--config.schedule.warmup_steps=2",
               "--config.batch_size=32", "--config.model.depth=1", "--config.model.dim=16",
               "--config.model.num_heads=2")
  assert r.returncode == 0, r.stderr
  log = r.stderr + r.stdout
  assert "new (did not fit): image/head/bias, image/head/kernel" in log
  frozen = log.split("Frozen (not updated): ")[1].splitlines()[0].split(", ")
  assert "image/conv_0/kernel" in frozen and "image/dense_0/kernel" in frozen
  assert not [p for p in frozen if not p.startswith("image/") or "head" in p]
  import orbax.checkpoint as ocp

  from bigmodel_jax.runs import checkpoint
  read = lambda w: ocp.PyTreeCheckpointer().restore(os.path.join(  # noqa: E731
      checkpoint.directory(str(w)), str(checkpoint.saved_steps(str(w))[-1]), "state"))["params"]
  before, after = read(classifier), read(lit)
  for layer in ("conv_0", "conv_2", "dense_0"):
    np.testing.assert_array_equal(after["image"][layer]["kernel"], before[layer]["kernel"])
  assert json.loads((lit / "results.json").read_text())["eval/zero_shot_accuracy"] >= 0
