"""Attention's arithmetic: which implementation config.model.attention picks, and
softmax_attention, the one in plain XLA operations (the Attention module is in transformer.py).

Shapes are in the names: B batch, L/S query/key length, N query heads, K key/value heads,
H head width.
"""

import jax
import jax.numpy as jnp


# config.model.attention: how attention is computed. "xla" is softmax_attention below (XLA
# operations, any backend); "cudnn" is cuDNN's fused flash attention through
# jax.nn.dot_product_attention (NVIDIA GPUs; bf16/fp16; head size a multiple of 8 up to 128; no
# explicit mask); "auto" takes cuDNN wherever it applies and XLA's otherwise.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


def softmax_attention(q_BxLxNxH: jax.Array, k_BxSxKxH: jax.Array, v_BxSxKxH: jax.Array,
                      mask_Bx1xLxS: jax.Array | None = None, is_causal: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(H), masked) v in plain XLA operations: what jax.nn.dot_product_attention
  computes with implementation="xla" (logits and softmax in float32, grouped-query attention),
  written so that XLA:CPU runs it faster: q scaled before the product (L x H values, not L x S),
  key/value heads repeated to the query heads (4-D products; the 5-D grouped form runs at half
  speed there), the mask a select against a large finite negative. The pycode Transformer's
  attention (32 x 128 tokens, 4 heads of 32) forward + backward on the project's 2-core CPU:
  12.3 ms against jax.nn.dot_product_attention's 16.9 (benchmarks/RESULTS.md)."""
  heads, kv_heads = q_BxLxNxH.shape[2], k_BxSxKxH.shape[2]
  if heads != kv_heads:
    k_BxSxKxH = jnp.repeat(k_BxSxKxH, heads // kv_heads, axis=2)
    v_BxSxKxH = jnp.repeat(v_BxSxKxH, heads // kv_heads, axis=2)
  scale = jnp.asarray(q_BxLxNxH.shape[-1] ** -0.5, q_BxLxNxH.dtype)
  logits_BxNxLxS = jnp.einsum("blnh,bsnh->bnls", q_BxLxNxH * scale, k_BxSxKxH,
                              preferred_element_type=jnp.float32)
  length, keys = logits_BxNxLxS.shape[-2:]
  keep = mask_Bx1xLxS
  if is_causal:
    causal_LxS = jnp.tril(jnp.ones((length, keys), bool))  # as jax.nn.dot_product_attention
    keep = causal_LxS if keep is None else keep & causal_LxS
  if keep is not None:
    logits_BxNxLxS = jnp.where(keep, logits_BxNxLxS, -0.7 * jnp.finfo(jnp.float32).max)
  probs = jax.nn.softmax(logits_BxNxLxS, axis=-1).astype(v_BxSxKxH.dtype)
  return jnp.einsum("bnls,bsnh->blnh", probs, v_BxSxKxH)


def attention_implementation(name: str, q_BxLxNxH: jax.Array, mask: jax.Array | None) -> str:
  if name not in ATTENTION_IMPLEMENTATIONS:
    raise ValueError(f"attention '{name}' unknown; known: {', '.join(ATTENTION_IMPLEMENTATIONS)}")
  if name != "auto":
    return name
  head = q_BxLxNxH.shape[-1]
  fits = (jax.default_backend() == "gpu" and mask is None and head % 8 == 0 and head <= 128
          and q_BxLxNxH.dtype in (jnp.bfloat16, jnp.float16))
  return "cudnn" if fits else "xla"
