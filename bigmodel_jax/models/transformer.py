"""Transformers: pre-LN blocks with multi-head attention (softmax_attention in XLA operations, or
cuDNN's flash attention through `jax.nn.dot_product_attention` on GPUs).

- TransformerClassifier: patches (1-D for sequences, 2-D for images: the ViT), a class token,
  learned positions, an encoder, a linear head. ViT-B/16 has torchvision's 86,567,656 parameters.
- DecoderLM: a causal decoder-only language model, learned or rotary positions, optionally tied
  embeddings. GPT-2 small (tied, learned) has 124,439,808 parameters. The options that imported
  checkpoints need (convert.py) compute GPT-2 and Llama exactly: norm (layernorm | rmsnorm) and
  norm_epsilon, mlp (gelu | gelu_exact | swiglu), use_bias, num_kv_heads (grouped-query
  attention), rope_base and rope_scaling (models/rotary.py). Packed inputs ({"tokens",
  "segment_ids", "positions"}) keep each document's tokens from attending to another's.

All three take the family's options, transformer_config.TransformerConfig (heads, norms,
attention, MLP kind, rotary positions, remat and scan, and moe.py's MoESpec: with
num_experts > 0 the blocks that moe_every names have a mixture of experts for an MLP), declared
once there: the model freezes its own (config_of) and passes it whole to every Block and
Attention, which read what they use.

Shapes are in the names: B batch, L/S query/key length, D model width, N heads, H head width.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.models.attention import (attention_implementation, ring_attention,
                                           softmax_attention, zigzag)
from bigmodel_jax.models.layers import AUX, conv, dense, mlp_hidden, token_dot_general
from bigmodel_jax.models import pipeline
from bigmodel_jax.models.layout import Layout
from bigmodel_jax.models.moe import MOE_STATE, MoE
from bigmodel_jax.models.rotary import rotary
from bigmodel_jax.models.transformer_config import TransformerConfig, TransformerOptions, config_of

_INIT = nn.initializers.xavier_uniform()
_ZEROS = nn.initializers.zeros_init()


def _partitioned(init, axes):
  return nn.with_logical_partitioning(init, axes)


def layer_norm(name: str | None = None, kind: str = "layernorm",
               epsilon: float = 1e-6) -> nn.Module:
  """LayerNorm, or RMSNorm (a scale, no centring and no bias: Llama's)."""
  scale_init = _partitioned(nn.initializers.ones_init(), ("embed",))
  if kind == "rmsnorm":
    return nn.RMSNorm(epsilon=epsilon, name=name, scale_init=scale_init)
  if kind != "layernorm":
    raise ValueError(f"norm '{kind}' unknown; known: layernorm, rmsnorm")
  return nn.LayerNorm(epsilon=epsilon, name=name, scale_init=scale_init,
                      bias_init=_partitioned(_ZEROS, ("embed",)))


class BlockInputs(NamedTuple):
  """The arrays a block reads besides its input (None: not given), batch first."""
  mask_Bx1xLxL: jax.Array | None = None
  positions_BxL: jax.Array | None = None
  context_BxSxD: jax.Array | None = None  # cross-attention's memory (an encoder's output)
  context_mask_Bx1xLxS: jax.Array | None = None
  segments_BxL: jax.Array | None = None  # context parallelism: ring attention's segments


class Attention(nn.Module):
  config: TransformerConfig
  head_dim: int
  use_rotary: bool = False
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, context_BxSxD: jax.Array | None = None, *,
               mask_Bx1xLxS: jax.Array | None = None, is_causal: bool = False,
               positions_BxL: jax.Array | None = None, train: bool = False,
               decode: bool = False, segments_BxL: jax.Array | None = None) -> jax.Array:
    """segments_BxL: given only under context parallelism (causal self-attention in zigzag
    order, models/attention.ring_attention), where it takes the place of a mask."""
    c = self.config
    if c.kv_lora_rank:
      if segments_BxL is not None or context_BxSxD is not None:
        raise ValueError("latent attention (kv_lora_rank > 0) is causal self-attention: no "
                         "context parallelism or cross-attention")
      return self._latent(x_BxLxD, positions_BxL, train, decode, mask_Bx1xLxS, is_causal)
    context_BxSxD = x_BxLxD if context_BxSxD is None else context_BxSxD
    kv_heads = c.num_kv_heads or c.num_heads
    if c.num_heads % kv_heads:
      raise ValueError(f"{c.num_heads} heads do not divide into {kv_heads} key/value heads")
    proj = lambda name, heads: nn.DenseGeneral(
        (heads, self.head_dim), name=name, use_bias=c.use_bias,
        kernel_init=_partitioned(_INIT, ("embed", "heads", "kv")),
        bias_init=_partitioned(_ZEROS, ("heads", "kv")), dot_general=token_dot_general)
    q = proj("query", c.num_heads)(x_BxLxD)
    k, v = proj("key", kv_heads)(context_BxSxD), proj("value", kv_heads)(context_BxSxD)
    if c.qk_norm:
      scale = _partitioned(nn.initializers.ones_init(), ("kv",))
      q, k = (nn.RMSNorm(epsilon=c.norm_epsilon, scale_init=scale, name=f"{name}_norm")(t)
              for name, t in (("query", q), ("key", k)))
    if self.use_rotary:
      q, k = rotary(q, positions_BxL, c), rotary(k, positions_BxL, c)
    if decode:  # causal self-attention over a key/value cache of the positions seen so far
      k, v, mask_Bx1xLxS = self._cached(k, v, positions_BxL)
      is_causal = False
    if segments_BxL is not None:
      out_BxLxNxH = ring_attention(q, k, v, segments_BxL, self.layout)
    elif attention_implementation(c.attention, q, mask_Bx1xLxS) == "cudnn":
      out_BxLxNxH = jax.nn.dot_product_attention(q, k, v, mask=mask_Bx1xLxS, is_causal=is_causal,
                                                 implementation="cudnn")
    else:
      out_BxLxNxH = softmax_attention(q, k, v, mask_Bx1xLxS, is_causal)
    return self._out(out_BxLxNxH, x_BxLxD.shape[-1], train)

  def _out(self, out_BxLxNxH: jax.Array, width: int, train: bool) -> jax.Array:
    c = self.config
    out = nn.DenseGeneral(width, axis=(-2, -1), name="out", use_bias=c.use_bias,
                          kernel_init=_partitioned(_INIT, ("heads", "kv", "embed")),
                          bias_init=_partitioned(_ZEROS, ("embed",)),
                          dot_general=token_dot_general)(out_BxLxNxH)
    return nn.Dropout(c.dropout, deterministic=not train)(out)

  def _latent(self, x_BxLxD: jax.Array, positions_BxL: jax.Array, train: bool, decode: bool,
              mask_Bx1xLxS: jax.Array | None, is_causal: bool) -> jax.Array:
    """Multi-head latent attention (DeepSeek-V2/V3). Queries: x -> q_a (q_lora_rank) ->
    RMSNorm -> q_b, or x -> query. Keys and values: x -> kv_a, a kv_lora_rank latent (RMSNorm)
    and one rotary key shared by the heads; latent -> kv_b, each head's key features without
    positions and its value. The cache holds the latent and the rotary key per token."""
    c, n = self.config, self.config.num_heads
    nope, rope, r = c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank
    norm = lambda name: nn.RMSNorm(epsilon=c.norm_epsilon, name=name, scale_init=_partitioned(
        nn.initializers.ones_init(), ("kv",)))
    heads = lambda name, width: nn.DenseGeneral(
        (n, width), name=name, use_bias=False, dot_general=token_dot_general,
        kernel_init=_partitioned(_INIT, ("kv", "heads", None)))
    latent = lambda name, width: dense(width, ("embed", "kv"), name=name, use_bias=False)
    if c.q_lora_rank:
      q = heads("q_b", nope + rope)(norm("q_a_norm")(latent("q_a", c.q_lora_rank)(x_BxLxD)))
    else:
      q = nn.DenseGeneral((n, nope + rope), name="query", use_bias=False,
                          dot_general=token_dot_general,
                          kernel_init=_partitioned(_INIT, ("embed", "heads", "kv")))(x_BxLxD)
    kv = latent("kv_a", r + rope)(x_BxLxD)
    latent_BxLxR, k_rope_BxLx1xP = norm("kv_a_norm")(kv[..., :r]), kv[..., None, r:]
    q = jnp.concatenate([q[..., :nope], rotary(q[..., nope:], positions_BxL, c)], -1)
    k_rope_BxLx1xP = rotary(k_rope_BxLx1xP, positions_BxL, c)
    if decode:
      latent_BxLxR, k_rope_BxLx1xP, mask_Bx1xLxS = self._cached_latent(
          latent_BxLxR, k_rope_BxLx1xP, positions_BxL)
      is_causal = False
    kv_BxLxNxF = heads("kv_b", nope + c.v_head_dim)(latent_BxLxR)
    k = jnp.concatenate([kv_BxLxNxF[..., :nope],
                         jnp.broadcast_to(k_rope_BxLx1xP, (*kv_BxLxNxF.shape[:3], rope))], -1)
    out_BxLxNxV = softmax_attention(q, k, kv_BxLxNxF[..., nope:], mask_Bx1xLxS, is_causal)
    return self._out(out_BxLxNxV, x_BxLxD.shape[-1], train)

  def _cached_latent(self, latent_BxLxR: jax.Array, k_rope_BxLx1xP: jax.Array,
                     positions_BxL: jax.Array):
    """_cached's counterpart for latent attention: the cache holds each token's latent and
    rotary key (kv_lora_rank + qk_rope_head_dim values), not every head's key and value."""
    initialized = self.has_variable("cache", "cached_latent")
    latent = self.variable("cache", "cached_latent", jnp.zeros, latent_BxLxR.shape,
                           latent_BxLxR.dtype)
    rope = self.variable("cache", "cached_rope_key", jnp.zeros, k_rope_BxLx1xP.shape,
                         k_rope_BxLx1xP.dtype)
    if not initialized:
      return latent_BxLxR, k_rope_BxLx1xP, None
    start = positions_BxL[0, 0]
    latent.value = jax.lax.dynamic_update_slice(latent.value, latent_BxLxR, (0, start, 0))
    rope.value = jax.lax.dynamic_update_slice(rope.value, k_rope_BxLx1xP, (0, start, 0, 0))
    visible_BxLxS = jnp.arange(latent.value.shape[1])[None, None, :] <= positions_BxL[:, :, None]
    return latent.value, rope.value, visible_BxLxS[:, None]

  def _cached(self, k_BxLxNxH: jax.Array, v_BxLxNxH: jax.Array, positions_BxL: jax.Array):
    """Writes this call's keys and values at their positions into the cache (created by an
    init with decode=True on B x max_len tokens) and returns all cached keys, values and the
    mask that lets each query see the positions up to its own."""
    initialized = self.has_variable("cache", "cached_key")
    key = self.variable("cache", "cached_key", jnp.zeros, k_BxLxNxH.shape, k_BxLxNxH.dtype)
    value = self.variable("cache", "cached_value", jnp.zeros, v_BxLxNxH.shape, v_BxLxNxH.dtype)
    if not initialized:
      return k_BxLxNxH, v_BxLxNxH, None
    start = positions_BxL[0, 0]
    key.value = jax.lax.dynamic_update_slice(key.value, k_BxLxNxH, (0, start, 0, 0))
    value.value = jax.lax.dynamic_update_slice(value.value, v_BxLxNxH, (0, start, 0, 0))
    visible_BxLxS = jnp.arange(key.value.shape[1])[None, None, :] <= positions_BxL[:, :, None]
    return key.value, value.value, visible_BxLxS[:, None]


class Block(nn.Module):
  """x + attention(LN(x)) [+ cross-attention(LN(x), context)] + MLP(LN(x)) (or, with moe, the
  mixture of experts of moe.py, by config's MoESpec).

  The arrays come in one positional BlockInputs and the flags are attributes, so that nn.remat
  and nn.scan can wrap it."""

  config: TransformerConfig
  mlp_dim: int
  layout: Layout = Layout()
  cross: bool = False
  is_causal: bool = False
  rotary: bool = False  # rotary positions in self-attention (DecoderLM's positions="rotary")
  train: bool = False
  decode: bool = False
  moe: bool = False  # this block's MLP is the mixture of experts

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, inputs: BlockInputs = BlockInputs()) -> jax.Array:
    c, d = self.config, x_BxLxD.shape[-1]
    if d % c.num_heads:
      raise ValueError(f"transformer width {d} does not divide into {c.num_heads} heads")
    attention = lambda name, rotary_positions: Attention(c, d // c.num_heads, rotary_positions,
                                                         self.layout, name=name)
    norm = lambda name: layer_norm(name, c.norm, c.norm_epsilon)
    x_BxLxD = self.layout.constrain(x_BxLxD, ("batch", "length", "embed"))
    x = x_BxLxD + attention("attention", self.rotary)(
        norm("ln_attention")(x_BxLxD), mask_Bx1xLxS=inputs.mask_Bx1xLxL,
        is_causal=self.is_causal, positions_BxL=inputs.positions_BxL, train=self.train,
        decode=self.decode, segments_BxL=inputs.segments_BxL)
    if self.cross:
      x = x + attention("cross_attention", False)(
          norm("ln_cross")(x), inputs.context_BxSxD, mask_Bx1xLxS=inputs.context_mask_Bx1xLxS,
          train=self.train)
    if self.moe:
      h = MoE(c, c.expert_dim or self.mlp_dim, c.mlp, c.use_bias, self.train, self.layout,
              name="moe")(norm("ln_mlp")(x))
    else:
      h = self.layout.constrain(mlp_hidden(norm("ln_mlp")(x), self.mlp_dim, c.mlp, c.use_bias),
                                ("batch", "length", "mlp"))
      h = dense(d, ("mlp", "embed"), name="mlp_out", use_bias=c.use_bias)(h)
    return x + nn.Dropout(c.dropout, deterministic=not self.train)(h)


class _ScanBlock(Block):
  """A Block as nn.scan's body: (carry, broadcast inputs) -> (carry, nothing)."""

  def __call__(self, x_BxLxD, inputs):  # noqa: D102
    return super().__call__(x_BxLxD, inputs), None


# config.model.remat: what a block keeps for the backward pass (the rest is recomputed).
REMAT_POLICIES = {
    "none": None,  # no remat: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the block's input
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def blocks(x_BxLxD: jax.Array, inputs: BlockInputs, *, config: TransformerConfig, depth: int,
           mlp_dim: int, name: str, layout: Layout = Layout(), **flags: bool) -> jax.Array:
  """`depth` Blocks in sequence, called inside a parent's compact method: a Python loop
  (NAME0, NAME1, ...) or, with config.scan_layers, one nn.scan over stacked parameters (NAME, a
  leading "layers" axis: compiled once whatever the depth); each block rematerialized by
  config.remat; the blocks that config.is_moe names are mixtures of experts; under
  layout.pipeline the scanned blocks run as pipeline stages. flags: Block's (cross,
  is_causal, rotary, train, decode)."""
  if config.remat not in REMAT_POLICIES:
    raise ValueError(f"remat '{config.remat}' unknown; known: {', '.join(REMAT_POLICIES)}")
  scan = config.scan_layers
  cls = _ScanBlock if scan else Block
  if config.remat != "none":
    cls = nn.remat(cls, policy=REMAT_POLICIES[config.remat], prevent_cse=not scan)
  block = dict(config=config, mlp_dim=mlp_dim, layout=layout, **flags)
  if not scan:
    for i in range(depth):
      x_BxLxD = cls(**block, moe=config.is_moe(i), name=f"{name}{i}")(x_BxLxD, inputs)
    return x_BxLxD
  if config.num_experts and config.moe_every != 1:
    raise ValueError(f"scan_layers stacks identical blocks: with experts it needs moe_every=1, "
                     f"not {config.moe_every}")
  dense_first = min(config.first_dense, depth) if config.num_experts else 0
  if dense_first:  # the first blocks dense: a stack of their own (NAME_dense), then the rest
    if layout.pipeline is not None:
      raise ValueError("pipeline stages need identical blocks: model.first_dense must be 0")
    dense_config = dataclasses.replace(config, num_experts=0, first_dense=0)
    x_BxLxD = blocks(x_BxLxD, inputs, config=dense_config, depth=dense_first, mlp_dim=mlp_dim,
                     name=f"{name}_dense", layout=layout, **flags)
    if dense_first == depth:
      return x_BxLxD
    depth -= dense_first
  block["moe"] = config.num_experts > 0
  stack = nn.scan(cls, variable_axes={"params": 0, "cache": 0, AUX: 0, MOE_STATE: 0},
                  split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast,),
                  length=depth, metadata_params={nn.PARTITION_NAME: "layers"})(**block, name=name)
  if layout.pipeline is None or flags.get("decode") or stack.is_initializing():
    x_BxLxD, _ = stack(x_BxLxD, inputs)
    return x_BxLxD
  stage_block = Block(**{**block, "layout": layout.inside_stage()}, parent=None)
  return pipeline.run_scanned(stack, stage_block, x_BxLxD, inputs, layout,
                              remat=REMAT_POLICIES[config.remat],
                              dropout=bool(flags.get("train") and config.dropout))


class TransformerClassifier(TransformerOptions):
  """Encoder classifier. `patch` sets the patch size per spatial axis: (4,) turns a length-40
  sequence into 10 tokens; (16, 16) on 224x224 images is ViT-B/16's."""

  num_classes: int
  patch: Sequence[int] = (4,)
  dim: int = 64
  depth: int = 4
  mlp_dim: int = 256
  pooling: str = "cls"  # cls token or mean over tokens
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    if x.ndim == 2:
      x = x[..., None]
    if len(self.patch) != x.ndim - 2:
      raise ValueError(f"patch {tuple(self.patch)} has {len(self.patch)} axes; inputs have "
                       f"{x.ndim - 2} spatial axes")
    x = conv(self.dim, tuple(self.patch), strides=tuple(self.patch), padding="VALID",
             name="patch_embed")(x)
    x_BxLxD = x.reshape(x.shape[0], -1, self.dim)
    if self.pooling == "cls":
      cls = self.param("cls_token", _partitioned(_ZEROS, (None, None, "embed")), (1, 1, self.dim))
      x_BxLxD = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)), x_BxLxD], 1)
    elif self.pooling != "mean":
      raise ValueError(f"transformer pooling '{self.pooling}' unknown; known: cls, mean")
    pos = self.param("position_embedding",
                     _partitioned(nn.initializers.normal(0.02), (None, "length", "embed")),
                     (1, x_BxLxD.shape[1], self.dim))
    x_BxLxD = nn.Dropout(self.dropout, deterministic=not train)(x_BxLxD + pos)
    x_BxLxD = blocks(x_BxLxD, BlockInputs(), config=config_of(self), depth=self.depth,
                     mlp_dim=self.mlp_dim, name="block", layout=self.layout, train=train)
    x_BxLxD = layer_norm("ln_final", self.norm, self.norm_epsilon)(x_BxLxD)
    pooled = x_BxLxD[:, 0] if self.pooling == "cls" else x_BxLxD.mean(axis=1)
    return dense(self.num_classes, ("embed", "classes"), name="head")(pooled)


class DecoderLM(TransformerOptions):
  """Causal LM over token ids B x L -> logits B x L x vocab_size.

  Decoding with a key/value cache: `init(..., tokens_BxMaxLen, decode=True)` creates the cache;
  then each call with decode=True and `start` (the position of its first token) feeds the next
  tokens (a prompt at once, then one at a time) and updates the cache (mutable=["cache"]).
  Packed windows (data.packing) come as {"tokens", "segment_ids", "positions"}: a token attends
  only to earlier tokens of its own segment, and positions restart at each segment.

  part: the 1F1B pipeline schedule (models/pipeline.one_f_one_b), which owns the backward
  pass, runs the model in pieces: "embed" returns (x_BxLxD, BlockInputs) as the blocks get
  them, "head" the logits of hidden_BxLxD (the blocks' output); each layer is stage_block().
  """

  vocab_size: int
  max_len: int = 256
  dim: int = 256
  depth: int = 4
  mlp_dim: int = 1024
  positions: str = "learned"  # learned | rotary
  tie_embeddings: bool = True
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  def stage_block(self, train: bool) -> Block:
    """One layer of the scanned stack, unbound, as a pipeline stage runs it."""
    return Block(config_of(self), self.mlp_dim, self.layout.inside_stage(), is_causal=True,
                 rotary=self.positions == "rotary", train=train, moe=self.num_experts > 0,
                 parent=None)

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array | dict[str, jax.Array], *, train: bool = False,
               decode: bool = False, start: int | jax.Array = 0, part: str = "all",
               hidden_BxLxD: jax.Array | None = None) -> Any:
    if self.positions not in ("learned", "rotary"):
      raise ValueError(f"positions '{self.positions}' unknown; known: learned, rotary")
    segments_BxL = None
    if isinstance(tokens_BxL, dict):  # a packed window
      segments_BxL, positions_BxL = tokens_BxL["segment_ids"], tokens_BxL["positions"]
      tokens_BxL = tokens_BxL["tokens"]
    length = tokens_BxL.shape[1]
    if length > self.max_len:
      raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
    gather_positions = segments_BxL is not None
    if segments_BxL is None:
      positions_BxL = jnp.broadcast_to(start + jnp.arange(length), tokens_BxL.shape)
    # context parallelism: the sequence in zigzag order, ring attention (segments, no mask)
    ring = not decode and self.layout.context_axis is not None
    if ring:
      order = zigzag(length, self.layout.context_size)
      segments_BxL = jnp.zeros_like(tokens_BxL) if segments_BxL is None else segments_BxL
      tokens_BxL, positions_BxL, segments_BxL = (a[:, order] for a in (tokens_BxL, positions_BxL,
                                                                      segments_BxL))
      gather_positions, mask_Bx1xLxL = True, None
    else:
      mask_Bx1xLxL = (None if segments_BxL is None else
                      (segments_BxL[:, :, None] == segments_BxL[:, None, :])[:, None])
    embed = nn.Embed(self.vocab_size, self.dim, name="token_embedding",
                     embedding_init=_partitioned(nn.initializers.normal(0.02), ("vocab", "embed")))
    inputs = BlockInputs()
    if part == "head":
      x_BxLxD = hidden_BxLxD
    else:
      x_BxLxD = embed(tokens_BxL)
      if self.positions == "learned":
        pos = self.param("position_embedding",
                         _partitioned(nn.initializers.normal(0.01), ("length", "embed")),
                         (self.max_len, self.dim))
        x_BxLxD = x_BxLxD + (pos[positions_BxL] if gather_positions
                             else jax.lax.dynamic_slice_in_dim(pos, start, length))
      x_BxLxD = nn.Dropout(self.dropout, deterministic=not train)(x_BxLxD)
      inputs = BlockInputs(mask_Bx1xLxL, positions_BxL,
                           segments_BxL=segments_BxL if ring else None)
      if part == "embed":
        return x_BxLxD, inputs
      x_BxLxD = blocks(x_BxLxD, inputs, config=config_of(self), depth=self.depth,
                       mlp_dim=self.mlp_dim, name="block", layout=self.layout, is_causal=True,
                       rotary=self.positions == "rotary", train=train, decode=decode)
      if ring:
        x_BxLxD = x_BxLxD[:, np.argsort(order)]
    head = embed.attend if self.tie_embeddings else dense(
        self.vocab_size, ("embed", "vocab"), name="lm_head", use_bias=False)
    if (self.mtp_depth and (train or self.is_initializing()) and part == "all" and not ring
        and not decode):  # (created at init, which runs with train=False)
      self._multi_token(x_BxLxD, tokens_BxL, inputs, segments_BxL, embed, head, train)
    return head(layer_norm("ln_final", self.norm, self.norm_epsilon)(x_BxLxD))

  def _multi_token(self, h_BxLxD: jax.Array, tokens_BxL: jax.Array, inputs: BlockInputs,
                   segments_BxL: jax.Array | None, embed: nn.Embed, head, train: bool) -> None:
    """DeepSeek-V3's multi-token prediction, in training only: module k (mtp1, mtp2, ...)
    joins the previous output h (RMSNorm) and the embedding of the token k places on (RMSNorm)
    by a linear map of 2D -> D and one more block, and predicts the token k+1 places on through
    its own final norm and the shared head. Sows mtp_loss_k (the mean cross entropy over the
    positions whose target lies in the window and, packed, in the same document) and
    mtp_aux_loss (mtp_weight x their mean), which the objective adds to the loss."""
    length, losses = tokens_BxL.shape[1], []
    norm = lambda name: layer_norm(name, "rmsnorm", self.norm_epsilon)  # noqa: E731
    for k in range(1, self.mtp_depth + 1):
      ahead_BxL = jnp.pad(tokens_BxL[:, k:], ((0, 0), (0, k)))
      joined = jnp.concatenate([norm(f"mtp{k}_hidden_norm")(h_BxLxD),
                                norm(f"mtp{k}_embed_norm")(embed(ahead_BxL))], -1)
      h_BxLxD = dense(self.dim, (None, "embed"), name=f"mtp{k}_proj", use_bias=False)(joined)
      h_BxLxD = Block(config_of(self), self.mlp_dim, self.layout, is_causal=True,
                      rotary=self.positions == "rotary", train=train,
                      moe=self.num_experts > 0, name=f"mtp{k}_block")(h_BxLxD, inputs)
      logits = head(norm(f"mtp{k}_norm")(h_BxLxD)).astype(jnp.float32)
      target_BxL = jnp.pad(tokens_BxL[:, k + 1:], ((0, 0), (0, k + 1)))
      valid_BxL = jnp.arange(length)[None, :] < length - k - 1
      if segments_BxL is not None:
        valid_BxL = valid_BxL & (segments_BxL == jnp.pad(segments_BxL[:, k + 1:],
                                                         ((0, 0), (0, k + 1)), constant_values=-1))
      ce_BxL = -jnp.take_along_axis(jax.nn.log_softmax(logits), target_BxL[..., None], -1)[..., 0]
      losses.append(jnp.sum(ce_BxL * valid_BxL) / jnp.maximum(jnp.sum(valid_BxL), 1))
      if train:
        self.sow(AUX, f"mtp_loss_{k}", losses[-1])
    if train:
      self.sow(AUX, "mtp_aux_loss", self.mtp_weight * sum(losses) / len(losses))


class EncoderDecoder(TransformerOptions):
  """Sequence to sequence over token ids (0 = padding): inputs {"encoder": B x S, "decoder":
  B x T} -> logits B x T x vocab_size. The encoder masks padded keys; the decoder is causal and
  cross-attends to the unpadded encoder outputs. One embedding serves both sides and the output."""

  vocab_size: int
  max_len: int = 64
  dim: int = 128
  encoder_depth: int = 3
  decoder_depth: int = 3
  mlp_dim: int = 512
  layout: Layout = Layout()  # the trainer's (models/layout.py)

  @nn.compact
  def __call__(self, inputs: dict[str, jax.Array], *, train: bool = False) -> jax.Array:
    src_BxS, tgt_BxT = inputs["encoder"], inputs["decoder"]
    if max(src_BxS.shape[1], tgt_BxT.shape[1]) > self.max_len:
      raise ValueError(f"sequence longer than max_len {self.max_len}")
    embed = nn.Embed(self.vocab_size, self.dim, name="token_embedding",
                     embedding_init=_partitioned(nn.initializers.normal(0.02), ("vocab", "embed")))
    position = lambda name: self.param(name, _partitioned(nn.initializers.normal(0.01),
                                                          ("length", "embed")), (self.max_len, self.dim))
    drop = nn.Dropout(self.dropout, deterministic=not train)
    keys_Bx1x1xS = (src_BxS != 0)[:, None, None, :]
    x = drop(embed(src_BxS) + position("encoder_positions")[:src_BxS.shape[1]])
    common = dict(config=config_of(self), mlp_dim=self.mlp_dim, layout=self.layout, train=train)
    x = blocks(x, BlockInputs(keys_Bx1x1xS), depth=self.encoder_depth, name="encoder", **common)
    norm = lambda name: layer_norm(name, self.norm, self.norm_epsilon)  # noqa: E731
    memory_BxSxD = norm("encoder_ln")(x)
    y = drop(embed(tgt_BxT) + position("decoder_positions")[:tgt_BxT.shape[1]])
    y = blocks(y, BlockInputs(context_BxSxD=memory_BxSxD, context_mask_Bx1xLxS=keys_Bx1x1xS),
               depth=self.decoder_depth, name="decoder", cross=True, is_causal=True, **common)
    return embed.attend(norm("decoder_ln")(y))
