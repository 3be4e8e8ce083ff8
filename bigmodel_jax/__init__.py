"""bigmodel_jax: one JAX/Flax trainer for CNN, ResNet, LSTM/GRU and Transformer families."""

__version__ = "0.1.0"
