"""Networks over an image and a text (data.kind=paired: inputs {"image": B x H x W x C,
"text": B x T word ids, 0 = padding}), built from the Transformer blocks of transformer.py.

- FusionClassifier: one answer class from both modalities, by `fusion`:
    image_only / text_only  one encoder, the other input ignored (the baselines)
    late    each modality's encoder, pooled features concatenated
    gated   the same, mixed by a learned sigmoid gate per feature (g * image + (1 - g) * text)
    early   one Transformer over image patches and text tokens together (a type embedding each)
    cross   an image encoder, then text blocks whose cross-attention reads the image patches
    bottleneck  MBT (Nagrani et al. 2021): an encoder per modality, each block of each also
            attending to a few shared bottleneck tokens, whose two updates are averaged: the
            only way information crosses; pooled features concatenated
  Every variant pools its tokens (mean over real tokens), then dense(dim) + GELU + the head.
- DualEncoder: an image tower and a text tower into one embedding space (unit vectors) and the
  learned temperature and bias of a contrastive loss (objectives/contrastive.py). The image
  tower is any registered classifier (config: image_tower={"name": "cnn", ...}; its head
  becomes the projection), so a classifier's workdir can warm-start it (LiT).
- Captioner: a ViT image encoder and a causal text decoder that cross-attends to the patches;
  decoding with a key/value cache as DecoderLM (objectives/captioning.py).

Shapes are in the names: B batch, P patches, T text tokens, D width, E embedding.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.classifiers import CLASSIFIERS
from bigmodel_jax.models.layers import conv, dense
from bigmodel_jax.models.layout import Layout, layout_of
from bigmodel_jax.models.transformer import Block, BlockInputs, blocks, layer_norm
from bigmodel_jax.models.transformer_config import TransformerConfig

PAD = 0
FUSIONS = ("image_only", "text_only", "late", "gated", "early", "cross", "bottleneck")
_EMBED_INIT = nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed"))


class PatchEmbed(nn.Module):
  """B x H x W x C -> B x P x D: non-overlapping patches, each projected, plus its position."""

  dim: int
  patch: Sequence[int]

  @nn.compact
  def __call__(self, image: jax.Array) -> jax.Array:
    patch = tuple(self.patch)
    if len(patch) != 2 or any(s % p for s, p in zip(image.shape[1:3], patch)):
      raise ValueError(f"patch {patch} does not tile images of {image.shape[1]} x {image.shape[2]}")
    x = conv(self.dim, patch, strides=patch, padding="VALID", name="conv")(image)
    x_BxPxD = x.reshape(x.shape[0], -1, self.dim)
    pos = self.param("positions", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, "length", "embed")), (1, x_BxPxD.shape[1], self.dim))
    return x_BxPxD + pos


class TokenEmbed(nn.Module):
  """B x T ids -> B x T x D: word embedding plus learned position (positions start..start+T of
  max_len; max_len 0: the input's length)."""

  vocab_size: int
  dim: int
  max_len: int = 0

  @nn.compact
  def __call__(self, tokens_BxT: jax.Array, start: int | jax.Array = 0) -> jax.Array:
    length = self.max_len or tokens_BxT.shape[1]
    if tokens_BxT.shape[1] > length:
      raise ValueError(f"text of {tokens_BxT.shape[1]} tokens is longer than max_len {length}")
    pos = self.param("positions", nn.with_logical_partitioning(
        nn.initializers.normal(0.01), ("length", "embed")), (length, self.dim))
    x = nn.Embed(self.vocab_size, self.dim, embedding_init=_EMBED_INIT, name="embedding")(tokens_BxT)
    return x + jax.lax.dynamic_slice_in_dim(pos, start, tokens_BxT.shape[1])


class Encoder(nn.Module):
  """`depth` pre-LN blocks and a final LayerNorm; cross: each block also attends to `context`;
  causal: each token sees only those before it (decode: with a key/value cache)."""

  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  cross: bool = False
  causal: bool = False
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, mask: jax.Array | None = None,
               context_BxSxD: jax.Array | None = None, *, train: bool = False,
               decode: bool = False, positions_BxL: jax.Array | None = None) -> jax.Array:
    x_BxLxD = blocks(x_BxLxD, BlockInputs(mask, positions_BxL, context_BxSxD),
                     config=TransformerConfig(num_heads=self.num_heads, dropout=self.dropout),
                     depth=self.depth, mlp_dim=self.mlp_dim, name="block", layout=self.layout,
                     cross=self.cross, is_causal=self.causal, train=train, decode=decode)
    return layer_norm("ln")(x_BxLxD)


def _keys(tokens_BxT: jax.Array) -> jax.Array:
  return (tokens_BxT != PAD)[:, None, None, :]  # attention mask over keys: B x 1 x 1 x T


def _mean(x_BxLxD: jax.Array, real_BxL: jax.Array | None = None) -> jax.Array:
  if real_BxL is None:
    return x_BxLxD.mean(axis=1)
  w = real_BxL.astype(x_BxLxD.dtype)[..., None]
  return jnp.sum(x_BxLxD * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1)


class FusionClassifier(nn.Module):
  num_classes: int
  vocab_size: int
  fusion: str = "cross"  # FUSIONS
  patch: Sequence[int] = (4, 4)
  dim: int = 64
  depth: int = 2  # blocks per encoder (early: 2 x depth blocks over both modalities)
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.0
  bottleneck_tokens: int = 4  # fusion=bottleneck
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  @nn.compact
  def __call__(self, inputs: dict[str, jax.Array], *, train: bool = False) -> jax.Array:
    if self.fusion not in FUSIONS:
      raise ValueError(f"fusion '{self.fusion}' unknown; known: {', '.join(FUSIONS)}")
    image, text_BxT = inputs["image"], inputs["text"]
    real_BxT = text_BxT != PAD
    encoder = lambda name, depth=self.depth, cross=False: Encoder(  # noqa: E731
        depth, self.num_heads, self.mlp_dim, self.dropout, cross=cross, layout=self.layout,
        name=name)
    image_tokens = lambda: PatchEmbed(self.dim, self.patch, name="image_embed")(image)  # noqa: E731
    text_tokens = lambda: TokenEmbed(self.vocab_size, self.dim, name="text_embed")(text_BxT)  # noqa: E731
    f = self.fusion
    if f in ("image_only", "late", "gated"):
      image_D = _mean(encoder("image_encoder")(image_tokens(), train=train))
    if f in ("text_only", "late", "gated"):
      text_D = _mean(encoder("text_encoder")(text_tokens(), _keys(text_BxT), train=train), real_BxT)
    if f == "image_only":
      h = image_D
    elif f == "text_only":
      h = text_D
    elif f == "late":
      h = jnp.concatenate([image_D, text_D], -1)
    elif f == "gated":
      g = nn.sigmoid(dense(self.dim, ("embed", "mlp"), name="gate")(
          jnp.concatenate([image_D, text_D], -1)))
      h = g * image_D + (1 - g) * text_D
    elif f == "early":  # one sequence: patches then words, each with its type embedding
      types = self.param("type_embedding", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, "embed")), (2, self.dim))
      patches = image_tokens() + types[0]
      tokens = jnp.concatenate([patches, text_tokens() + types[1]], 1)
      real = jnp.concatenate([jnp.ones(patches.shape[:2], bool), real_BxT], 1)
      h = _mean(encoder("encoder", 2 * self.depth)(tokens, _keys(real.astype(jnp.int32)),
                                                   train=train), real)
    elif f == "cross":  # the words attend to each other and, in every block, to the patches
      memory_BxPxD = encoder("image_encoder")(image_tokens(), train=train)
      h = _mean(encoder("text_encoder", cross=True)(text_tokens(), _keys(text_BxT), memory_BxPxD,
                                                    train=train), real_BxT)
    else:
      h = self._bottleneck(image_tokens(), text_tokens(), real_BxT, train)
    h = nn.gelu(dense(self.dim, ("embed", "mlp"), name="fuse")(h))
    return dense(self.num_classes, ("mlp", "classes"), name="head")(h)

  def _bottleneck(self, image_BxPxD, text_BxTxD, real_BxT, train):
    n, (b, p, d) = self.bottleneck_tokens, image_BxPxD.shape
    shared = jnp.broadcast_to(self.param("bottleneck", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, None, "embed")), (1, n, d)), (b, n, d))
    keys = _keys(jnp.concatenate([real_BxT, jnp.ones((b, n), bool)], 1).astype(jnp.int32))
    config = TransformerConfig(num_heads=self.num_heads, dropout=self.dropout)
    block = lambda name: Block(config, self.mlp_dim, self.layout, train=train,  # noqa: E731
                               name=name)
    for i in range(self.depth):
      image = block(f"image_block{i}")(jnp.concatenate([image_BxPxD, shared], 1))
      text = block(f"text_block{i}")(jnp.concatenate([text_BxTxD, shared], 1),
                                     BlockInputs(keys))
      image_BxPxD, text_BxTxD = image[:, :p], text[:, :-n]
      shared = (image[:, p:] + text[:, -n:]) / 2
    return jnp.concatenate([_mean(layer_norm("image_ln")(image_BxPxD)),
                            _mean(layer_norm("text_ln")(text_BxTxD), real_BxT)], -1)


class DualEncoder(nn.Module):
  """(image, text) -> unit embeddings B x E each, and log(temperature), bias of the loss."""

  vocab_size: int
  embed_dim: int = 64
  image_tower: Any = None  # a registered classifier: {"name": "vit", ...}; None: VIT_TOWER
  dim: int = 64  # the text tower's width, depth, heads and MLP
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.0
  logit_scale: float = 2.302585  # the learned log(1 / temperature) starts at log(10) (SigLIP)
  logit_bias: float = 0.0  # SigLIP starts it at -10; the softmax loss ignores it
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  def setup(self):
    tower = dict(self.image_tower or VIT_TOWER)
    name = tower.pop("name", "")
    if name not in CLASSIFIERS:
      raise ValueError(f"image_tower: '{name}' is not a registered image classifier "
                       f"({', '.join(CLASSIFIERS)})")
    cls = CLASSIFIERS[name]
    self.image = cls(num_classes=self.embed_dim, **tower, **layout_of(cls, self.layout))
    self.text_embed = TokenEmbed(self.vocab_size, self.dim)
    self.text_encoder = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout,
                                layout=self.layout)
    self.text_head = dense(self.embed_dim, ("embed", "mlp"))
    self.scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale), ())
    self.bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias), ())

  def encode_image(self, image: jax.Array, train: bool = False) -> jax.Array:
    return _unit(self.image(image, train=train))

  def encode_text(self, text_BxT: jax.Array, train: bool = False) -> jax.Array:
    x = self.text_encoder(self.text_embed(text_BxT), _keys(text_BxT), train=train)
    return _unit(self.text_head(_mean(x, text_BxT != PAD)))

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool = False):
    return (self.encode_image(inputs["image"], train), self.encode_text(inputs["text"], train),
            self.scale, self.bias)


VIT_TOWER = {"name": "vit", "patch": (2, 2), "dim": 64, "depth": 2, "num_heads": 4,
             "mlp_dim": 128, "pooling": "mean"}


def _unit(x: jax.Array) -> jax.Array:
  return x / jnp.sqrt(jnp.sum(jnp.square(x), -1, keepdims=True) + 1e-12)


class Captioner(nn.Module):
  """{"image", "text": B x T decoder input (BOS + caption)} -> logits B x T x vocab_size.
  Decoding: `init(..., decode=True)` on B x max_len tokens creates the cache; then `decode`
  calls with `start` feed the next tokens (mutable=["cache"]), the image encoded once."""

  vocab_size: int
  max_len: int = 16
  patch: Sequence[int] = (2, 2)
  dim: int = 64
  depth: int = 2  # image encoder blocks
  decoder_depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.0
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  def setup(self):
    self.image_embed = PatchEmbed(self.dim, self.patch)
    self.image_encoder = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout,
                                 layout=self.layout)
    self.text_embed = TokenEmbed(self.vocab_size, self.dim, self.max_len)
    self.decoder = Encoder(self.decoder_depth, self.num_heads, self.mlp_dim, self.dropout,
                           cross=True, causal=True, layout=self.layout)
    self.out = dense(self.vocab_size, ("embed", "vocab"))

  def encode(self, image: jax.Array, train: bool = False) -> jax.Array:
    return self.image_encoder(self.image_embed(image), train=train)

  def decode(self, memory_BxPxD: jax.Array, tokens_BxT: jax.Array, *, train: bool = False,
             decode: bool = False, start: int | jax.Array = 0) -> jax.Array:
    positions_BxT = jnp.broadcast_to(start + jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    x = self.decoder(self.text_embed(tokens_BxT, start), None, memory_BxPxD, train=train,
                     decode=decode, positions_BxL=positions_BxT)
    return self.out(x)

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool = False,
               decode: bool = False) -> jax.Array:
    return self.decode(self.encode(inputs["image"], train), inputs["text"], train=train,
                       decode=decode)
