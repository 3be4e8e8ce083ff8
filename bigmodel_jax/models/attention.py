"""Attention's arithmetic: which implementation config.model.attention picks,
softmax_attention, the one in plain XLA operations, and ring_attention, causal self-attention
over a sequence split across devices (context parallelism). The Attention module is in
transformer.py.

Shapes are in the names: B batch, L/S query/key length, N query heads, K key/value heads,
H head width.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bigmodel_jax.models.layout import Layout


# config.model.attention: how attention is computed. "xla" is softmax_attention below (XLA
# operations, any backend); "cudnn" is cuDNN's fused flash attention through
# jax.nn.dot_product_attention (NVIDIA GPUs; bf16/fp16; head size a multiple of 8 up to 128; no
# explicit mask); "auto" takes cuDNN wherever it applies and XLA's otherwise.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


def softmax_attention(q_BxLxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array,
                      mask_Bx1xLxS: jax.Array | None = None, is_causal: bool = False,
                      query_blocks: int | None = None) -> jax.Array:
  """softmax(q k^T / sqrt(H), masked) v in plain XLA operations: what jax.nn.dot_product_attention
  computes with implementation="xla" (logits and softmax in float32, grouped-query attention),
  written so that XLA:CPU runs it faster: q scaled before the product (L x H values, not L x S),
  key/value heads repeated to the query heads (4-D products; the 5-D grouped form runs at half
  speed there), the mask a select against a large finite negative.

  Causal self-attention (L == S) skips the keys a query cannot see, as a flash-attention kernel
  does: the queries are cut into query_blocks consecutive blocks (default
  causal_query_blocks(L)), and block i attends only to the keys up to its last query, so about
  (n+1)/2n of the L x S logits are computed. Same result: the skipped logits are masked, their
  probabilities exactly 0. The pycode Transformer's attention (32 x 128 tokens, 4 heads of 32)
  forward + backward on the project's 2-core CPU: 16.9 ms through
  jax.nn.dot_product_attention, 12.3 ms in one block, 7.0 in four (benchmarks/RESULTS.md)."""
  heads, kv_heads = q_BxLxNxH.shape[2], k_BxSxKxH.shape[2]
  if heads != kv_heads:
    k_BxSxKxH = jnp.repeat(k_BxSxKxH, heads // kv_heads, axis=2)
    v_BxSxKxH = jnp.repeat(v_BxSxKxH, heads // kv_heads, axis=2)
  q_BxLxNxH = q_BxLxNxH * jnp.asarray(q_BxLxNxH.shape[-1] ** -0.5, q_BxLxNxH.dtype)
  length, keys = q_BxLxNxH.shape[1], k_BxSxKxH.shape[1]
  # heads next to the batch, once (not per query block): the products' batch dimensions lead
  q_BxNxLxH, k_BxNxSxH, v_BxNxSxH = (jnp.swapaxes(t, 1, 2)
                                     for t in (q_BxLxNxH, k_BxSxKxH, v_BxSxKxH))
  if not is_causal or length != keys:
    causal = jnp.tril(jnp.ones((length, keys), bool)) if is_causal else None  # as jax.nn's
    out_BxNxLxH = _attend(q_BxNxLxH, k_BxNxSxH, v_BxNxSxH, _both(mask_Bx1xLxS, causal))
    return jnp.swapaxes(out_BxNxLxH, 1, 2)
  blocks = causal_query_blocks(length) if query_blocks is None else query_blocks
  if not 1 <= blocks <= length:
    raise ValueError(f"query_blocks={blocks}: must be between 1 and the length {length}")
  ends = [round(length * (i + 1) / blocks) for i in range(blocks)]
  outs = []
  for start, end in zip([0] + ends[:-1], ends):
    # queries start..end-1 over keys 0..end-1: query start+r sees key c iff c <= start + r
    causal = (jnp.arange(end)[None, :] <= start + jnp.arange(end - start)[:, None])
    mask = None if mask_Bx1xLxS is None else _block_of(mask_Bx1xLxS, start, end)
    outs.append(_attend(q_BxNxLxH[:, :, start:end], k_BxNxSxH[:, :, :end],
                        v_BxNxSxH[:, :, :end], _both(mask, causal)))
  return jnp.swapaxes(outs[0] if blocks == 1 else jnp.concatenate(outs, axis=2), 1, 2)


def causal_query_blocks(length: int) -> int:
  """How many query blocks causal softmax_attention cuts a length into: blocks of at least 32
  queries, at most 8 blocks (the fastest on the project's CPU at lengths 128 to 1024; smaller
  blocks cost more in per-operation overhead than the skipped keys save)."""
  return max(1, min(8, length // 32))


def _block_of(mask: jax.Array, start: int, end: int) -> jax.Array:
  """The part of a (broadcastable) mask for queries start..end-1 over keys 0..end-1."""
  if mask.shape[-2] != 1:
    mask = mask[..., start:end, :]
  return mask if mask.shape[-1] == 1 else mask[..., :end]


def _both(mask: jax.Array | None, causal: jax.Array | None) -> jax.Array | None:
  return causal if mask is None else mask if causal is None else mask & causal


def _attend(q_BxNxLxH: jax.Array, k_BxNxSxH: jax.Array, v_BxNxSxH: jax.Array,
            keep: jax.Array | None) -> jax.Array:
  logits_BxNxLxS = jnp.einsum("bnlh,bnsh->bnls", q_BxNxLxH, k_BxNxSxH,
                              preferred_element_type=jnp.float32)
  if keep is not None:
    logits_BxNxLxS = jnp.where(keep, logits_BxNxLxS, -0.7 * jnp.finfo(jnp.float32).max)
  probs = jax.nn.softmax(logits_BxNxLxS, axis=-1).astype(v_BxNxSxH.dtype)
  return jnp.einsum("bnls,bnsh->bnlh", probs, v_BxNxSxH)


def attention_implementation(name: str, q_BxLxNxH: jax.Array, mask: jax.Array | None) -> str:
  if name not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention '{name}' unknown; known: {', '.join(ATTENTION_IMPLEMENTATIONS)}")
  if name != "auto":
    return name
  head = q_BxLxNxH.shape[-1]
  fits = (jax.default_backend() == "gpu" and mask is None and head % 8 == 0 and head <= 128
          and q_BxLxNxH.dtype in (jnp.bfloat16, jnp.float16))
  return "cudnn" if fits else "xla"


def zigzag(length: int, ways: int) -> np.ndarray:
  """The token order that balances causal attention over `ways` devices: the sequence cut into
  2 x ways chunks, device i holding chunks i and 2 ways - 1 - i (an early and a late one)."""
  chunks = np.arange(length).reshape(2 * ways, length // (2 * ways))
  return np.concatenate([np.concatenate([chunks[i], chunks[2 * ways - 1 - i]])
                         for i in range(ways)])


def ring_attention(q_BxLxNxH: jax.Array, k_BxLxKxH: jax.Array, v_BxLxKxH: jax.Array,
                   segments_BxL: jax.Array, layout: Layout) -> jax.Array:
  """Causal self-attention whose inputs are in zigzag order (zigzag(L, ways)) and split over
  the ways devices of layout.context_axis along L: each device keeps its queries and passes
  its keys and values around the ring (ways - 1 collective permutes), accumulating the
  softmax online (flash
  attention's running maximum and sum, float32; the backward pass recomputes each block's
  probabilities rather than keeping them). A query sees the earlier keys of its own
  segment (packing). With zigzag order every step after the first has exactly half a block
  of visible pairs on every device (the other half is skipped), so the devices stay balanced.
  Grouped key/value heads are repeated to the query heads first (they travel repeated)."""
  heads, kv_heads = q_BxLxNxH.shape[2], k_BxLxKxH.shape[2]
  if heads != kv_heads:
    k_BxLxKxH = jnp.repeat(k_BxLxKxH, heads // kv_heads, axis=2)
    v_BxLxKxH = jnp.repeat(v_BxLxKxH, heads // kv_heads, axis=2)
  qkv = layout.spec(q_BxLxNxH.shape, ("batch", "length", "heads", "kv"))
  seg = layout.spec(segments_BxL.shape, ("batch", "length"))
  local = functools.partial(_ring_local, axis=layout.context_axis, ways=layout.context_size)
  return jax.shard_map(local, mesh=layout.mesh, in_specs=(qkv, qkv, qkv, seg), out_specs=qkv,
                       check_vma=False)(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, segments_BxL)


def _ring_local(q_BxLxNxH, k_BxSxNxH, v_BxSxNxH, seg_BxL, *, axis: str, ways: int):
  """One device's part of ring_attention: L = 2c local queries, chunks i and 2 ways - 1 - i."""
  me = jax.lax.axis_index(axis)
  c = q_BxLxNxH.shape[1] // 2
  order = lambda d: jnp.concatenate([d * c + jnp.arange(c), (2 * ways - 1 - d) * c + jnp.arange(c)])
  q_BxNxLxH = jnp.swapaxes(q_BxLxNxH * jnp.asarray(q_BxLxNxH.shape[-1] ** -0.5, q_BxLxNxH.dtype),
                           1, 2)
  q_order, seg_q = order(me), seg_BxL
  b, n, length, h = q_BxNxLxH.shape
  acc = (jnp.zeros((b, n, length, h), jnp.float32),
         jnp.full((b, n, length), _MASKED, jnp.float32), jnp.zeros((b, n, length), jnp.float32))

  def update(acc, rows: slice, cols: slice, k_BxSxNxH, v_BxSxNxH, seg_k, k_order):
    out, top, total = (a[:, :, rows] for a in acc)
    keep_BxLxS = ((k_order[cols][None, :] <= q_order[rows][:, None])[None]
                  & (seg_q[:, rows, None] == seg_k[:, None, cols]))
    k_BxNxSxH, v_BxNxSxH = (jnp.swapaxes(t[:, cols], 1, 2) for t in (k_BxSxNxH, v_BxSxNxH))
    logits = jnp.einsum("bnlh,bnsh->bnls", q_BxNxLxH[:, :, rows], k_BxNxSxH,
                        preferred_element_type=jnp.float32)
    logits = jnp.where(keep_BxLxS[:, None], logits, _MASKED)
    new_top = jnp.maximum(top, logits.max(-1))
    probs = jnp.exp(logits - new_top[..., None]) * keep_BxLxS[:, None]
    scale = jnp.exp(top - new_top)
    out = out * scale[..., None] + jnp.einsum("bnls,bnsh->bnlh", probs.astype(v_BxNxSxH.dtype),
                                              v_BxNxSxH, preferred_element_type=jnp.float32)
    total = total * scale + probs.sum(-1)
    return tuple(a.at[:, :, rows].set(x) for a, x in zip(acc, (out, new_top, total)))

  whole, early, late = slice(None), slice(None, c), slice(c, None)
  # (my query rows, the key columns) a step computes; each rematerialized: the backward pass
  # recomputes a block's probabilities instead of keeping one per ring step (flash-style)
  part = lambda rows, cols: jax.checkpoint(lambda acc, kv, k_order: update(acc, rows, cols, *kv,
                                                                           k_order))
  own, earlier, later = part(whole, whole), part(whole, early), part(late, whole)
  kv = (k_BxSxNxH, v_BxSxNxH, seg_BxL)
  for step in range(ways):
    source = (me - step) % ways
    k_order = order(source)
    if step == 0:
      acc = own(acc, kv, k_order)
    else:  # an earlier device's early chunk is visible to all my queries; a later device's
      # two chunks only to my late chunk
      acc = jax.lax.cond(source < me, earlier, later, acc, kv, k_order)
    if step < ways - 1:
      ring_perm = [(d, (d + 1) % ways) for d in range(ways)]
      kv = tuple(jax.lax.ppermute(t, axis, ring_perm) for t in kv)
  out, _, total = acc
  return jnp.swapaxes(out / total[..., None], 1, 2).astype(q_BxLxNxH.dtype)


_MASKED = -0.7 * float(np.finfo(np.float32).max)
