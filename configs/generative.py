"""Generative models on the 8x8 digits (and MNIST-1D), offline: VAE, conditional VAE, GAN, DDPM.

  python -m bigmodel_jax.main --config=configs/generative.py:vae --workdir=runs/digits_vae
  python -m bigmodel_jax.main --config=configs/generative.py:conv_vae --workdir=runs/digits_conv_vae
  python -m bigmodel_jax.main --config=configs/generative.py:cvae --workdir=runs/digits_cvae
  python -m bigmodel_jax.main --config=configs/generative.py:gan --workdir=runs/digits_gan
  python -m bigmodel_jax.main --config=configs/generative.py:ddpm --workdir=runs/digits_ddpm
  python -m bigmodel_jax.main --config=configs/generative.py:vae_mnist1d --workdir=runs/mnist1d_vae
  python -m bigmodel_jax.sample --workdir=runs/digits_ddpm --out=ddpm.png

Variants (the arg):
  vae          MLP VAE as in the flax example (500 hidden, 20 latents), binomial likelihood over
               the 17 pixel levels: eval/loss is the negative ELBO and eval/nll_iwae the
               importance-weighted bound (k=100), nats per example
  conv_vae     the same with a convolutional encoder and decoder (32-64 channels)
  cvae         conditional VAE: the class (one-hot) goes to the encoder and the decoder
  gan          class-conditional DCGAN: generator with transposed convolutions and BatchNorm,
               the class scaling its latents; projection discriminator; non-saturating loss;
               Adam(b1=0.5) each, the discriminator at 4e-4, the generator at 1e-4
  ddpm         class-conditional DDPM: small U-Net (32-64), cosine schedule over 1000 steps,
               epsilon prediction, classifier-free guidance (w=1), DDIM sampling in 50 steps
  vae_mnist1d  MLP VAE on MNIST-1D signals, Gaussian likelihood with a learned scale
Samples are scored at every eval by a classifier of the data set (trainer/judge.py):
eval/sample_accuracy (conditional models), eval/fid_digits and its train-vs-test floor; a grid
is written to WORKDIR/samples/STEP.png.
"""

from bigmodel_jax import config as config_lib

VARIANTS = {
    "vae": dict(name="vae", latents=20, hidden=(500,)),
    "conv_vae": dict(name="vae", latents=20, hidden=(256,), channels=(32, 64)),
    "cvae": dict(name="vae", latents=20, hidden=(256,), channels=(32, 64), conditional=True),
    "gan": dict(name="gan", latents=64, generator_channels=(128, 64),
                discriminator_channels=(64, 128), conditional=True),
    "ddpm": dict(name="unet", channels=(32, 64), emb_dim=128, conditional=True),
    "vae_mnist1d": dict(name="vae", latents=10, hidden=(256, 256)),
}
OBJECTIVES = {
    "vae": dict(name="vae", likelihood="binomial", levels=16, iwae_samples=100),
    "gan": dict(name="gan", loss="non_saturating"),
    "unet": dict(name="diffusion", timesteps=1000, noise_schedule="cosine", label_dropout=0.1,
                 sample_steps=50, guidance=1.0),
}


def get_config(arg: str = "vae"):
  c = config_lib.from_variant(VARIANTS, arg)
  c.objective.update(OBJECTIVES[c.model.name])
  c.data.name = "digits"
  c.data.scale = 1 / 16  # pixel values 0..16 -> [0, 1]
  c.data.cache = True
  c.batch_size = 128
  c.eval_batch_size = 360
  c.total_steps = 4000
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 1000
  if c.model.name == "gan":  # two time-scale updates (Heusel et al. 2017): D 4x G's rate
    c.optimizer.learning_rate = 1e-4
    c.optimizer.b1 = 0.5
    c.optimizers.discriminator = config_lib.optimizer_config(name="adam", learning_rate=4e-4,
                                                             b1=0.5)
  if c.model.name == "unet":
    c.optimizer.learning_rate = 2e-3
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 200
    c.eval_batch_size = 360
  if arg == "vae_mnist1d":
    c.objective.likelihood = "gaussian"
    c.data.name, c.data.input_key, c.data.scale = "mnist1d", "x", 1.0
    c.eval_batch_size = 1000
    c.samples.per_class = 100
  return c
