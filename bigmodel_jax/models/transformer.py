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

All three take moe.py's MoEOptions (num_experts, experts_per_token, moe_every, ...): with
num_experts > 0 the blocks that moe_every names have a mixture of experts for an MLP.

Shapes are in the names: B batch, L/S query/key length, D model width, N heads, H head width.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.models.attention import (active_ring, attention_implementation, ring_attention,
                                           softmax_attention, zigzag)
from bigmodel_jax.models.layers import AUX, constrain, conv, dense, mlp_hidden, token_dot_general
from bigmodel_jax.models import pipeline
from bigmodel_jax.models.moe import MoE, MoEOptions, MoESpec, spec_of
from bigmodel_jax.models.rotary import Rope, rotary

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


class Attention(nn.Module):
  num_heads: int
  head_dim: int
  use_rotary: bool = False
  dropout: float = 0.0
  implementation: str = "auto"  # ATTENTION_IMPLEMENTATIONS
  num_kv_heads: int = 0  # grouped-query attention: key/value heads shared by groups; 0 = num_heads
  use_bias: bool = True
  rope: Rope = Rope()

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, context_BxSxD: jax.Array | None = None, *,
               mask_Bx1xLxS: jax.Array | None = None, is_causal: bool = False,
               positions_BxL: jax.Array | None = None, train: bool = False,
               decode: bool = False, segments_BxL: jax.Array | None = None) -> jax.Array:
    """segments_BxL: given only under context parallelism (causal self-attention in zigzag
    order, models/attention.ring_attention), where it takes the place of a mask."""
    context_BxSxD = x_BxLxD if context_BxSxD is None else context_BxSxD
    kv_heads = self.num_kv_heads or self.num_heads
    if self.num_heads % kv_heads:
      raise ValueError(f"{self.num_heads} heads do not divide into {kv_heads} key/value heads")
    proj = lambda name, heads: nn.DenseGeneral(
        (heads, self.head_dim), name=name, use_bias=self.use_bias,
        kernel_init=_partitioned(_INIT, ("embed", "heads", "kv")),
        bias_init=_partitioned(_ZEROS, ("heads", "kv")), dot_general=token_dot_general)
    q = proj("query", self.num_heads)(x_BxLxD)
    k, v = proj("key", kv_heads)(context_BxSxD), proj("value", kv_heads)(context_BxSxD)
    if self.use_rotary:
      q, k = rotary(q, positions_BxL, self.rope), rotary(k, positions_BxL, self.rope)
    if decode:  # causal self-attention over a key/value cache of the positions seen so far
      k, v, mask_Bx1xLxS = self._cached(k, v, positions_BxL)
      is_causal = False
    if segments_BxL is not None:
      out_BxLxNxH = ring_attention(q, k, v, segments_BxL, active_ring())
    elif attention_implementation(self.implementation, q, mask_Bx1xLxS) == "cudnn":
      out_BxLxNxH = jax.nn.dot_product_attention(q, k, v, mask=mask_Bx1xLxS, is_causal=is_causal,
                                                 implementation="cudnn")
    else:
      out_BxLxNxH = softmax_attention(q, k, v, mask_Bx1xLxS, is_causal)
    out = nn.DenseGeneral(x_BxLxD.shape[-1], axis=(-2, -1), name="out", use_bias=self.use_bias,
                          kernel_init=_partitioned(_INIT, ("heads", "kv", "embed")),
                          bias_init=_partitioned(_ZEROS, ("embed",)),
                          dot_general=token_dot_general)(out_BxLxNxH)
    return nn.Dropout(self.dropout, deterministic=not train)(out)

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
  mixture of experts of moe.py).

  Arrays are positional and flags are attributes, so that nn.remat and nn.scan can wrap it."""

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  use_rotary: bool = False
  cross: bool = False
  is_causal: bool = False
  train: bool = False
  decode: bool = False
  attention: str = "auto"  # ATTENTION_IMPLEMENTATIONS
  norm: str = "layernorm"  # layernorm | rmsnorm
  norm_epsilon: float = 1e-6
  mlp: str = "gelu"  # MLPS
  use_bias: bool = True
  num_kv_heads: int = 0  # 0 = num_heads
  rope: Rope = Rope()
  moe: MoESpec | None = None

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, mask_Bx1xLxL: jax.Array | None = None,
               positions_BxL: jax.Array | None = None, context_BxSxD: jax.Array | None = None,
               context_mask_Bx1xLxS: jax.Array | None = None,
               segments_BxL: jax.Array | None = None) -> jax.Array:
    d = x_BxLxD.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"transformer width {d} does not divide into {self.num_heads} heads")
    attention = lambda name, rope: Attention(
        self.num_heads, d // self.num_heads, rope, self.dropout, self.attention,
        self.num_kv_heads, self.use_bias, self.rope, name=name)
    norm = lambda name: layer_norm(name, self.norm, self.norm_epsilon)
    x_BxLxD = constrain(x_BxLxD, ("batch", "length", "embed"))
    x = x_BxLxD + attention("attention", self.use_rotary)(
        norm("ln_attention")(x_BxLxD), mask_Bx1xLxS=mask_Bx1xLxL, is_causal=self.is_causal,
        positions_BxL=positions_BxL, train=self.train, decode=self.decode,
        segments_BxL=segments_BxL)
    if self.cross:
      x = x + attention("cross_attention", False)(
          norm("ln_cross")(x), context_BxSxD, mask_Bx1xLxS=context_mask_Bx1xLxS,
          train=self.train)
    if self.moe is not None:
      h = MoE(self.moe, self.moe.expert_dim or self.mlp_dim, self.mlp, self.use_bias, self.train,
              name="moe")(norm("ln_mlp")(x))
    else:
      h = constrain(mlp_hidden(norm("ln_mlp")(x), self.mlp_dim, self.mlp, self.use_bias),
                    ("batch", "length", "mlp"))
      h = dense(d, ("mlp", "embed"), name="mlp_out", use_bias=self.use_bias)(h)
    return x + nn.Dropout(self.dropout, deterministic=not self.train)(h)


class _ScanBlock(Block):
  """A Block as nn.scan's body: (carry, *broadcast arrays) -> (carry, nothing)."""

  def __call__(self, x_BxLxD, *args):  # noqa: D102
    return super().__call__(x_BxLxD, *args), None


# config.model.remat: what a block keeps for the backward pass (the rest is recomputed).
REMAT_POLICIES = {
    "none": None,  # no remat: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the block's input
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def blocks(x_BxLxD: jax.Array, *args: jax.Array | None, depth: int, remat: str, scan: bool,
           name: str, moe: MoESpec | None = None, **block: object) -> jax.Array:
  """`depth` Blocks in sequence, called inside a parent's compact method: a Python loop
  (NAME0, NAME1, ...) or, with scan, one nn.scan over stacked parameters (NAME, a leading
  "layers" axis: compiled once whatever the depth); each block optionally rematerialized.
  moe: the blocks that moe.is_moe names are mixtures of experts."""
  if remat not in REMAT_POLICIES:
    raise ValueError(f"remat '{remat}' unknown; known: {', '.join(REMAT_POLICIES)}")
  moe = moe if moe is not None and moe.num_experts else None
  cls = _ScanBlock if scan else Block
  if remat != "none":
    cls = nn.remat(cls, policy=REMAT_POLICIES[remat], prevent_cse=not scan)
  if not scan:
    for i in range(depth):
      x_BxLxD = cls(**block, moe=moe if moe and moe.is_moe(i) else None,
                    name=f"{name}{i}")(x_BxLxD, *args)
    return x_BxLxD
  if moe and moe.moe_every != 1:
    raise ValueError(f"scan_layers stacks identical blocks: with experts it needs moe_every=1, "
                     f"not {moe.moe_every}")
  block["moe"] = moe
  stack = nn.scan(cls, variable_axes={"params": 0, "cache": 0, AUX: 0},
                  split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast,) * len(args),
                  length=depth, metadata_params={nn.PARTITION_NAME: "layers"})(**block, name=name)
  schedule = pipeline.active()
  if schedule is None or block.get("decode") or stack.is_initializing():
    x_BxLxD, _ = stack(x_BxLxD, *args)
    return x_BxLxD
  return pipeline.run_scanned(stack, Block(**block, parent=None), x_BxLxD, args, schedule,
                              remat=None if remat == "none" else REMAT_POLICIES[remat],
                              dropout=bool(block.get("train") and block.get("dropout")))


class TransformerClassifier(MoEOptions):
  """Encoder classifier. `patch` sets the patch size per spatial axis: (4,) turns a length-40
  sequence into 10 tokens; (16, 16) on 224x224 images is ViT-B/16's."""

  num_classes: int
  patch: Sequence[int] = (4,)
  dim: int = 64
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 256
  dropout: float = 0.0
  pooling: str = "cls"  # cls token or mean over tokens
  remat: str = "none"  # none, full, dots (REMAT_POLICIES)
  scan_layers: bool = False
  attention: str = "auto"  # auto (cuDNN flash attention on GPUs where it applies), xla, cudnn
  mlp: str = "gelu"  # MLPS; torchvision's ViT: gelu_exact
  norm_epsilon: float = 1e-6

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
    x_BxLxD = blocks(x_BxLxD, depth=self.depth, remat=self.remat, scan=self.scan_layers,
                     name="block", num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                     dropout=self.dropout, train=train, attention=self.attention,
                     mlp=self.mlp, norm_epsilon=self.norm_epsilon, moe=spec_of(self))
    x_BxLxD = layer_norm("ln_final", epsilon=self.norm_epsilon)(x_BxLxD)
    pooled = x_BxLxD[:, 0] if self.pooling == "cls" else x_BxLxD.mean(axis=1)
    return dense(self.num_classes, ("embed", "classes"), name="head")(pooled)


class DecoderLM(MoEOptions):
  """Causal LM over token ids B x L -> logits B x L x vocab_size.

  Decoding with a key/value cache: `init(..., tokens_BxMaxLen, decode=True)` creates the cache;
  then each call with decode=True and `start` (the position of its first token) feeds the next
  tokens (a prompt at once, then one at a time) and updates the cache (mutable=["cache"]).
  Packed windows (data.packing) come as {"tokens", "segment_ids", "positions"}: a token attends
  only to earlier tokens of its own segment, and positions restart at each segment.
  """

  vocab_size: int
  max_len: int = 256
  dim: int = 256
  depth: int = 4
  num_heads: int = 4
  mlp_dim: int = 1024
  dropout: float = 0.0
  positions: str = "learned"  # learned | rotary
  tie_embeddings: bool = True
  remat: str = "none"  # none, full, dots (REMAT_POLICIES)
  scan_layers: bool = False
  attention: str = "auto"  # auto (cuDNN flash attention on GPUs where it applies), xla, cudnn
  norm: str = "layernorm"  # layernorm (GPT-2) | rmsnorm (Llama)
  norm_epsilon: float = 1e-6  # GPT-2: 1e-5; Llama: its config's rms_norm_eps
  mlp: str = "gelu"  # MLPS: gelu (GPT-2's tanh approximation) | gelu_exact | swiglu (Llama)
  use_bias: bool = True  # Llama: False
  num_kv_heads: int = 0  # grouped-query attention; 0 = num_heads
  rope_base: float = 10000.0  # rotary positions' base (Llama's rope_theta)
  rope_scaling: str = "none"  # rotary.SCALINGS: none | linear | llama3 (Llama 3.1's)
  rope_factor: float = 1.0  # linear, llama3: how much longer the context is made
  rope_low_freq_factor: float = 1.0  # llama3
  rope_high_freq_factor: float = 4.0  # llama3
  rope_original_max_len: int = 8192  # llama3: the context trained before the extension

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array | dict[str, jax.Array], *, train: bool = False,
               decode: bool = False, start: int | jax.Array = 0) -> jax.Array:
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
    ring = None if decode else active_ring()
    if ring is not None:
      order = zigzag(length, ring.size)
      segments_BxL = jnp.zeros_like(tokens_BxL) if segments_BxL is None else segments_BxL
      tokens_BxL, positions_BxL, segments_BxL = (a[:, order] for a in (tokens_BxL, positions_BxL,
                                                                      segments_BxL))
      gather_positions, mask_Bx1xLxL = True, None
    else:
      mask_Bx1xLxL = (None if segments_BxL is None else
                      (segments_BxL[:, :, None] == segments_BxL[:, None, :])[:, None])
    embed = nn.Embed(self.vocab_size, self.dim, name="token_embedding",
                     embedding_init=_partitioned(nn.initializers.normal(0.02), ("vocab", "embed")))
    x_BxLxD = embed(tokens_BxL)
    if self.positions == "learned":
      pos = self.param("position_embedding",
                       _partitioned(nn.initializers.normal(0.01), ("length", "embed")),
                       (self.max_len, self.dim))
      x_BxLxD = x_BxLxD + (pos[positions_BxL] if gather_positions
                           else jax.lax.dynamic_slice_in_dim(pos, start, length))
    x_BxLxD = nn.Dropout(self.dropout, deterministic=not train)(x_BxLxD)
    x_BxLxD = blocks(x_BxLxD, mask_Bx1xLxL, positions_BxL, None, None,
                     segments_BxL if ring is not None else None, depth=self.depth, remat=self.remat,
                     scan=self.scan_layers, name="block", num_heads=self.num_heads,
                     mlp_dim=self.mlp_dim, dropout=self.dropout,
                     use_rotary=self.positions == "rotary", is_causal=True, train=train,
                     decode=decode, attention=self.attention, norm=self.norm,
                     norm_epsilon=self.norm_epsilon, mlp=self.mlp, use_bias=self.use_bias,
                     num_kv_heads=self.num_kv_heads, moe=spec_of(self),
                     rope=Rope(self.rope_base, self.rope_scaling, self.rope_factor,
                               self.rope_low_freq_factor, self.rope_high_freq_factor,
                               self.rope_original_max_len))
    if ring is not None:
      x_BxLxD = x_BxLxD[:, np.argsort(order)]
    x_BxLxD = layer_norm("ln_final", self.norm, self.norm_epsilon)(x_BxLxD)
    if self.tie_embeddings:
      return embed.attend(x_BxLxD)
    return dense(self.vocab_size, ("embed", "vocab"), name="lm_head", use_bias=False)(x_BxLxD)


class EncoderDecoder(MoEOptions):
  """Sequence to sequence over token ids (0 = padding): inputs {"encoder": B x S, "decoder":
  B x T} -> logits B x T x vocab_size. The encoder masks padded keys; the decoder is causal and
  cross-attends to the unpadded encoder outputs. One embedding serves both sides and the output."""

  vocab_size: int
  max_len: int = 64
  dim: int = 128
  encoder_depth: int = 3
  decoder_depth: int = 3
  num_heads: int = 4
  mlp_dim: int = 512
  dropout: float = 0.0
  remat: str = "none"  # none, full, dots (REMAT_POLICIES)
  scan_layers: bool = False
  attention: str = "auto"  # auto (cuDNN flash attention on GPUs where it applies), xla, cudnn

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
    common = dict(remat=self.remat, scan=self.scan_layers, num_heads=self.num_heads,
                  mlp_dim=self.mlp_dim, dropout=self.dropout, train=train,
                  attention=self.attention, moe=spec_of(self))
    x = blocks(x, keys_Bx1x1xS, depth=self.encoder_depth, name="encoder", **common)
    memory_BxSxD = layer_norm("encoder_ln")(x)
    y = drop(embed(tgt_BxT) + position("decoder_positions")[:tgt_BxT.shape[1]])
    y = blocks(y, None, None, memory_BxSxD, keys_Bx1x1xS, depth=self.decoder_depth,
               name="decoder", cross=True, is_causal=True, **common)
    return embed.attend(layer_norm("decoder_ln")(y))
