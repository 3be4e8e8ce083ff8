"""The classifiers by name: the first entries of the model registry (models/__init__.py), and
what a dual encoder's image tower (multimodal.py) and a multi-task trunk may be."""

import flax.linen as nn

from bigmodel_jax.models.cnn import CNN
from bigmodel_jax.models.densenet import DenseNet
from bigmodel_jax.models.mlp import MLP
from bigmodel_jax.models.mobilenet import MobileNet
from bigmodel_jax.models.recurrent import RNNClassifier
from bigmodel_jax.models.resnet import ResNet
from bigmodel_jax.models.transformer import TransformerClassifier

CLASSIFIERS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "resnet": ResNet,  # ResNeXt too: groups, width_per_group
    "mobilenet": MobileNet,
    "densenet": DenseNet,
    "rnn": RNNClassifier,  # LSTM or GRU: cell, bidirectional, pooling
    "transformer": TransformerClassifier,  # 1-D patches of sequences
    "vit": TransformerClassifier,  # the same with 2-D patches of images
}
