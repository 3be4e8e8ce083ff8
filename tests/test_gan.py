"""GANs (two networks, two optimizers) through the one trainer, and the generative objectives'
first losses on 8 devices under dp and fsdp against 1 device; exact resume after SIGKILL."""

import jax
import numpy as np
import pytest
from helpers import ONE_DEVICE, first_losses, kill_and_resume
from test_generative import _tiny

from bigmodel_jax.data import pipeline
from bigmodel_jax.trainer import build as build_lib


@pytest.mark.parametrize("arg", ["gan", "ddpm"])
def test_fsdp_on_8_devices_gives_the_first_losses_of_1_device(arg):
  # float32; only the order of float reductions differs between the programs
  # (a one-level U-Net: compiling it three times is most of this test's time)
  model = {"channels": (8,)} if arg == "ddpm" else {}
  one, _ = first_losses(_tiny(arg, "", **{f"model.{k}": v for k, v in model.items()}),
                        jax.devices()[:1])
  for preset in ("fsdp",):  # shards the batch as dp does, and the parameters (suite time)
    eight, _ = first_losses(_tiny(arg, "", sharding=preset,
                                  **{f"model.{k}": v for k, v in model.items()}))
    np.testing.assert_allclose(eight, one, rtol=1e-4, err_msg=preset)


def test_each_gan_network_is_trained_by_its_own_optimizer():
  c = _tiny("gan", "")
  c.optimizers.discriminator.learning_rate = 0.0  # the discriminator must not move
  sources = pipeline.load(c.data)
  b = build_lib.build(c, build_lib.example_of(sources.train), sources.num_outputs, 100)
  init, _ = b.create_state(c.seed)
  init = jax.device_get(init.params)
  _, state = first_losses(c, None, count=2)
  after = jax.device_get(state.params)
  same = jax.tree.map(np.array_equal, init["discriminator"], after["discriminator"])
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), init["generator"], after["generator"])
  assert all(jax.tree.leaves(same)) and all(jax.tree.leaves(moved))


GAN_ARGS = ["--config=configs/generative.py:gan", "--config.total_steps=25",
            "--config.batch_size=32", "--config.log_every=5", "--config.checkpoint_every=5",
            "--config.eval_every=25", "--config.samples.per_class=10",
            "--config.model.latents=16", "--config.model.generator_channels=(32, 16)",
            "--config.model.discriminator_channels=(16, 32)"]


def test_a_gan_killed_at_a_random_moment_resumes_to_the_same_parameters(tmp_path, digits_judge):
  # on one device: resume is what is under test (the 8-device GAN is tested below)
  a, b = kill_and_resume([*GAN_ARGS, f"--config.samples.judge={digits_judge}"], tmp_path, 0.5,
                         env=ONE_DEVICE)
  assert 0 < a["start_step"] < 25
  assert a["params_sha256"] == b["params_sha256"]
  assert a["eval/sample_accuracy"] == b["eval/sample_accuracy"]
