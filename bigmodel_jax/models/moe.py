"""Sparse mixture-of-experts MLP (GShard, Switch, Mixtral, DeepSeek-MoE, V-MoE).

A router scores every token's experts (softmax, or sigmoid as DeepSeek-V3) and sends the token to
its `experts_per_token` best (top-k). With k > 1 the k weights are renormalized to sum to 1
(Mixtral's and DeepSeek-V3's rule); with k = 1 the weight is the router's score itself (Switch's:
otherwise the router would learn nothing from the loss). Optional shared experts (DeepSeek) are
one dense MLP every token passes through. Two ways to compute the routed experts:

- capacity_factor > 0 (GShard, Switch): each example's tokens fill a fixed number of slots per
  expert, C = ceil(capacity_factor * L * k / E). Top-1 choices claim slots before top-2 ones, and
  earlier positions before later ones; a (token, expert) pair that finds its expert full is
  dropped (its part of the output is zero: the block's residual carries the token). Tokens are
  scattered into their slots and gathered back by index (linear in L, where GShard's one-hot
  einsums grow with L^2); the E x B x C x D slots are laid out expert-major, so under an `expert`
  mesh axis they move from the batch's devices to the experts' by an all-to-all. The experts
  compute every slot, filled or not: capacity_factor x the dense MLP's FLOPs (k = 1).
- capacity_factor = 0 (dropless, MegaBlocks / MaxText's sparse matmul): the B*L*k (token, expert)
  pairs are sorted by expert and each expert's rows multiplied at once (jax.lax.ragged_dot).

In training the layer sows into the AUX collection: aux_loss (load_balance_weight x Switch's
load-balancing loss + router_z_weight x ST-MoE's router z-loss), which objectives add to their
loss, and the metrics moe_load_balance_loss, moe_router_z_loss, moe_dropped (the share of pairs
dropped), moe_expert_share_E (each expert's share of the pairs) and moe_busiest_share (the
largest of them).

DeepSeek-V3's routing is options of the same layer: sigmoid scores, a correction bias per expert
that only the choice sees (router_bias_rate > 0: the bias is the MOE_STATE collection, model
state the trainer saves and resumes, moved each training step towards equal loads, so the
Switch loss can be 0: auxiliary-loss-free balancing), group-limited choice (n_group,
topk_group), the weights times routed_scaling, shared experts, the first first_dense blocks
dense.

Shapes are in the names: B batch, L length, D model width, E experts, K experts per token,
C slots per expert, H an expert's hidden width, T = B*L tokens.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models.layers import AUX, dense, mlp_activation, mlp_hidden
from bigmodel_jax.models.layout import Layout

ROUTERS = ("softmax", "sigmoid")
MOE_STATE = "moe_state"  # the collection of the routers' correction biases (model state)


@dataclasses.dataclass(frozen=True)
class MoESpec:
  """The options a model's config gives its MoE blocks (config.model keys of the same names)."""

  num_experts: int = 0  # 0: every block's MLP is dense
  experts_per_token: int = 1  # top-k
  moe_every: int = 1  # every N-th block (the N-th, 2N-th, ...) is MoE
  capacity_factor: float = 1.25  # 0: dropless
  router: str = "softmax"  # ROUTERS
  shared_experts: int = 0  # experts every token passes through (DeepSeek)
  expert_dim: int = 0  # an expert's hidden width; 0: the model's mlp_dim
  load_balance_weight: float = 0.01
  router_z_weight: float = 0.001
  first_dense: int = 0  # the first N blocks keep a dense MLP (DeepSeek's first_k_dense_replace)
  # auxiliary-loss-free balancing (DeepSeek-V3): a per-expert bias added to the scores for the
  # choice only, moved each training step by this rate towards equal loads; 0: no bias
  router_bias_rate: float = 0.0
  n_group: int = 1  # group-limited routing: the experts in n_group groups ...
  topk_group: int = 1  # ... and a token's experts only from its topk_group best groups
  routed_scaling: float = 1.0  # the routed experts' weights times this (routed_scaling_factor)

  def is_moe(self, block: int) -> bool:
    return (self.num_experts > 0 and block >= self.first_dense
            and (block + 1 - self.first_dense) % self.moe_every == 0)

  def check(self) -> None:
    """ConfigError naming the first option out of range."""
    if self.num_experts == 0:
      return
    if self.num_experts < 0:
      raise ConfigError(f"model.num_experts must be >= 0 (0: dense), got {self.num_experts}")
    if not 1 <= self.experts_per_token <= self.num_experts:
      raise ConfigError(f"model.experts_per_token={self.experts_per_token} must be in 1.."
                        f"{self.num_experts} (model.num_experts)")
    if self.moe_every < 1:
      raise ConfigError(f"model.moe_every must be a positive integer, got {self.moe_every}")
    if not self.capacity_factor >= 0:
      raise ConfigError(f"model.capacity_factor must be >= 0 (0: dropless), got "
                        f"{self.capacity_factor}")
    if self.router not in ROUTERS:
      raise ConfigError(f"model.router '{self.router}' unknown; known: {', '.join(ROUTERS)}")
    for key in ("shared_experts", "expert_dim"):
      if getattr(self, key) < 0:
        raise ConfigError(f"model.{key} must be >= 0, got {getattr(self, key)}")
    for key in ("load_balance_weight", "router_z_weight", "router_bias_rate", "first_dense"):
      if not getattr(self, key) >= 0:
        raise ConfigError(f"model.{key} must be >= 0, got {getattr(self, key)}")
    if not self.routed_scaling > 0:
      raise ConfigError(f"model.routed_scaling must be positive, got {self.routed_scaling}")
    if self.n_group < 1 or self.num_experts % self.n_group:
      raise ConfigError(f"model.n_group={self.n_group} must divide model.num_experts="
                        f"{self.num_experts}")
    if not 1 <= self.topk_group <= self.n_group:
      raise ConfigError(f"model.topk_group={self.topk_group} must be in 1..{self.n_group} "
                        f"(model.n_group)")
    offered = self.topk_group * self.num_experts // self.n_group
    if self.experts_per_token > offered:
      raise ConfigError(f"model.experts_per_token={self.experts_per_token} is more than the "
                        f"{offered} experts that model.topk_group={self.topk_group} of "
                        f"model.n_group={self.n_group} groups offer")


def capacity(spec: MoESpec, length: int) -> int:
  """Slots per expert for one example of `length` tokens."""
  return max(1, math.ceil(spec.capacity_factor * length * spec.experts_per_token
                          / spec.num_experts))


def route(spec: MoESpec, logits_TxE: jax.Array, bias_E: jax.Array | None = None
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(weights T x K, experts T x K, probabilities T x E summing to 1 per token) of float32 logits.

  The choice is by the router's scores (softmax probabilities, or sigmoids), plus bias_E when
  given (DeepSeek-V3's correction bias: it moves the choice, never the weights), among the
  experts of each token's topk_group best groups (a group's score: the sum of its two best);
  the weights are the chosen experts' scores, renormalized when K > 1, times routed_scaling."""
  scores_TxE = jax.nn.softmax(logits_TxE, -1) if spec.router == "softmax" else jax.nn.sigmoid(
      logits_TxE)
  probs_TxE = (scores_TxE if spec.router == "softmax"
               else scores_TxE / jnp.sum(scores_TxE, -1, keepdims=True))
  choice_TxE = scores_TxE if bias_E is None else scores_TxE + bias_E
  if spec.n_group > 1:
    t, per_group = choice_TxE.shape[0], spec.num_experts // spec.n_group
    grouped_TxGxP = choice_TxE.reshape(t, spec.n_group, per_group)
    group_TxG = jnp.sum(jax.lax.top_k(grouped_TxGxP, min(2, per_group))[0], -1)
    _, best_TxG = jax.lax.top_k(group_TxG, spec.topk_group)
    keep_TxG = jnp.any(jax.nn.one_hot(best_TxG, spec.n_group, dtype=bool), 1)
    choice_TxE = jnp.where(jnp.repeat(keep_TxG, per_group, -1), choice_TxE, -jnp.inf)
  _, experts_TxK = jax.lax.top_k(choice_TxE, spec.experts_per_token)
  weights_TxK = jnp.take_along_axis(scores_TxE, experts_TxK, -1)
  if spec.experts_per_token > 1:
    weights_TxK = weights_TxK / jnp.sum(weights_TxK, -1, keepdims=True)
  return weights_TxK * spec.routed_scaling, experts_TxK, probs_TxE


def balanced_bias(bias_E: jax.Array, experts_TxK: jax.Array, rate: float) -> jax.Array:
  """DeepSeek-V3's update of the correction bias from one step's loads: each expert's bias
  down by `rate` where it took more than the mean load, up where it took less."""
  load_E = jnp.sum(jax.nn.one_hot(experts_TxK, bias_E.shape[0], dtype=jnp.float32), (0, 1))
  return bias_E + rate * jnp.sign(jnp.mean(load_E) - load_E)


def load_balance_loss(experts_TxK: jax.Array, probs_TxE: jax.Array) -> jax.Array:
  """Switch's E * sum_e f_e P_e: f_e the share of (token, expert) pairs sent to e, P_e the mean
  router probability of e. 1.0 when either is uniform; larger when both favour the same experts."""
  num_experts = probs_TxE.shape[-1]
  share_E = _expert_share(experts_TxK, num_experts)
  return num_experts * jnp.sum(share_E * jnp.mean(probs_TxE, 0))


def router_z_loss(logits_TxE: jax.Array) -> jax.Array:
  """ST-MoE's mean over tokens of logsumexp(logits)^2: keeps the router's logits small."""
  return jnp.mean(jax.nn.logsumexp(logits_TxE, -1) ** 2)


def _expert_share(experts_TxK: jax.Array, num_experts: int) -> jax.Array:
  return jnp.mean(jax.nn.one_hot(experts_TxK, num_experts, dtype=jnp.float32), (0, 1))


def slot_indices(experts_BxKxL: jax.Array, num_experts: int, slots: int) -> jax.Array:
  """Capacity routing of each example: B x K x L slot numbers, expert * slots + the pair's place
  in its expert's queue, or num_experts * slots (no slot: dropped) where the queue is full.
  Queues fill choice by choice (every top-1 choice first), by position within a choice."""
  b, k, length = experts_BxKxL.shape
  mask_BxKLxE = jax.nn.one_hot(experts_BxKxL.reshape(b, k * length), num_experts, dtype=jnp.int32)
  place_BxKL = jnp.sum((jnp.cumsum(mask_BxKLxE, 1) - 1) * mask_BxKLxE, -1)
  slot_BxKL = jnp.where(place_BxKL < slots, experts_BxKxL.reshape(b, -1) * slots + place_BxKL,
                        num_experts * slots)
  return slot_BxKL.reshape(b, k, length)


class MoE(nn.Module):
  """x B x L x D -> B x L x D: the routed experts' weighted outputs (+ the shared experts')."""

  spec: MoESpec
  hidden: int  # an expert's hidden width
  mlp: str = "gelu"  # layers.MLPS
  use_bias: bool = True
  train: bool = False
  layout: Layout = Layout()

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    spec, (b, length, d) = self.spec, x_BxLxD.shape
    num_experts, k = spec.num_experts, spec.experts_per_token
    router = self.param("router", nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), ("embed", None)), (d, num_experts))
    x_TxD = x_BxLxD.reshape(b * length, d)
    logits_TxE = x_TxD.astype(jnp.float32) @ router.astype(jnp.float32)
    bias = None
    if spec.router_bias_rate > 0:  # state, not a parameter: saved and resumed with the run
      bias = self.variable(MOE_STATE, "correction_bias", jnp.zeros, (num_experts,), jnp.float32)
    weights_TxK, experts_TxK, probs_TxE = route(spec, logits_TxE,
                                                None if bias is None else bias.value)
    if bias is not None and self.train and self.is_mutable_collection(MOE_STATE):
      bias.value = balanced_bias(bias.value, jax.lax.stop_gradient(experts_TxK),
                                 spec.router_bias_rate)
    weights_TxK = weights_TxK.astype(x_BxLxD.dtype)
    if spec.capacity_factor > 0:
      out_BxLxD, dropped = self._capacity(x_BxLxD, weights_TxK.reshape(b, length, k),
                                          experts_TxK.reshape(b, length, k))
    else:
      out_BxLxD, dropped = self._dropless(x_TxD, weights_TxK, experts_TxK), jnp.zeros(())
      out_BxLxD = out_BxLxD.reshape(b, length, d)
    if spec.shared_experts:
      h = mlp_hidden(x_BxLxD, spec.shared_experts * self.hidden, self.mlp, self.use_bias,
                     prefix="shared")
      out_BxLxD = out_BxLxD + dense(d, ("mlp", "embed"), name="shared_out",
                                    use_bias=self.use_bias)(h)
    if self.train:
      balance, z = load_balance_loss(experts_TxK, probs_TxE), router_z_loss(logits_TxE)
      self.sow(AUX, "aux_loss", spec.load_balance_weight * balance + spec.router_z_weight * z)
      self.sow(AUX, "moe_load_balance_loss", balance)
      self.sow(AUX, "moe_router_z_loss", z)
      self.sow(AUX, "moe_dropped", dropped)
      share_E = _expert_share(experts_TxK, num_experts)
      self.sow(AUX, "moe_busiest_share", jnp.max(share_E))
      for e, share in enumerate(share_E):
        self.sow(AUX, f"moe_expert_share_{e}", share)
    return out_BxLxD

  def _weights(self, d: int) -> dict[str, jax.Array]:
    """The experts' stacked kernels (and biases): in (E x D x H), gate (swiglu), out (E x H x D)."""
    num_experts, h = self.spec.num_experts, self.hidden
    init = nn.initializers.lecun_normal(batch_axis=(0,))
    param = lambda name, shape, axes, fn=init: self.param(
        name, nn.with_logical_partitioning(fn, axes), shape)
    w = {"in": param("w_in", (num_experts, d, h), ("expert", "embed", "mlp")),
         "out": param("w_out", (num_experts, h, d), ("expert", "mlp", "embed"))}
    if self.mlp == "swiglu":
      w["gate"] = param("w_gate", (num_experts, d, h), ("expert", "embed", "mlp"))
    if self.use_bias:
      zeros = nn.initializers.zeros_init()
      w["in_bias"] = param("b_in", (num_experts, h), ("expert", "mlp"), zeros)
      w["out_bias"] = param("b_out", (num_experts, d), ("expert", "embed"), zeros)
      if self.mlp == "swiglu":
        w["gate_bias"] = param("b_gate", (num_experts, h), ("expert", "mlp"), zeros)
    return w

  def _experts(self, x: jax.Array, product, bias, hidden=lambda h: h) -> jax.Array:
    """The experts' MLPs on rows grouped by expert: product(rows, kernel E x in x out) multiplies
    each row by its expert's kernel, bias(E x out) gives each row its expert's bias, hidden
    lays out the hidden activations."""
    w = self._weights(x.shape[-1])
    up = product(x, w["in"])
    gate = product(x, w["gate"]) if "gate" in w else None
    if self.use_bias:
      up = up + bias(w["in_bias"])
      gate = None if gate is None else gate + bias(w["gate_bias"])
    out = product(hidden(mlp_activation(self.mlp, up, gate)), w["out"])
    return out + bias(w["out_bias"]) if self.use_bias else out

  def _capacity(self, x_BxLxD: jax.Array, weights_BxLxK: jax.Array, experts_BxLxK: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    b, length, d = x_BxLxD.shape
    num_experts, k = self.spec.num_experts, self.spec.experts_per_token
    slots = capacity(self.spec, length)
    slot_BxKxL = slot_indices(experts_BxLxK.swapaxes(1, 2), num_experts, slots)
    # per example (vmap: a batched scatter and gather, which stay on the batch's devices)
    fill = lambda x_LxD, slot_KxL: jnp.zeros((num_experts * slots + 1, d), x_LxD.dtype).at[
        slot_KxL].add(jnp.broadcast_to(x_LxD, (k, length, d)))  # + a row for dropped pairs
    filled = jax.vmap(fill)(x_BxLxD, slot_BxKxL)
    # expert-major: under an expert mesh axis, this constraint is the all-to-all to the experts
    constrain = self.layout.constrain
    x_ExBxCxD = constrain(filled[:, :-1].reshape(b, num_experts, slots, d).swapaxes(0, 1),
                          ("expert", "batch", None, "embed"))
    out_ExBxCxD = self._experts(
        x_ExBxCxD, lambda x, kernel: jnp.einsum("ebci,eio->ebco", x, kernel),
        lambda bias_E: bias_E[:, None, None, :],
        lambda h: constrain(h, ("expert", "batch", None, "mlp")))
    out_ExBxCxD = constrain(out_ExBxCxD, ("expert", "batch", None, "embed"))  # (and its gradient)
    # and back to the batch's devices (the second all-to-all)
    out_BxExCxD = constrain(out_ExBxCxD.swapaxes(0, 1), ("batch", None, None, "embed"))
    out_BxSxD = jnp.concatenate([out_BxExCxD.reshape(b, num_experts * slots, d),
                                 jnp.zeros((b, 1, d), out_BxExCxD.dtype)], 1)
    out_BxKxLxD = jax.vmap(lambda out_SxD, slot_KxL: out_SxD[slot_KxL])(out_BxSxD, slot_BxKxL)
    out_BxLxD = jnp.einsum("bkld,blk->bld", out_BxKxLxD, weights_BxLxK)
    dropped = jnp.mean((slot_BxKxL == num_experts * slots).astype(jnp.float32))
    return out_BxLxD, dropped

  def _dropless(self, x_TxD: jax.Array, weights_TxK: jax.Array, experts_TxK: jax.Array
                ) -> jax.Array:
    t, d = x_TxD.shape
    k, num_experts = self.spec.experts_per_token, self.spec.num_experts
    experts_P = experts_TxK.reshape(t * k)  # P = T*K (token, expert) pairs
    order_P = jnp.argsort(experts_P, stable=True)
    sorted_experts_P = experts_P[order_P]
    sizes_E = jnp.bincount(experts_P, length=num_experts).astype(jnp.int32)
    out_PxD = self._experts(x_TxD[order_P // k],
                            lambda x, kernel: jax.lax.ragged_dot(x, kernel, sizes_E),
                            lambda bias_E: bias_E[sorted_experts_P])
    out_TxKxD = jnp.zeros_like(out_PxD).at[order_P].set(out_PxD).reshape(t, k, d)
    return jnp.einsum("tkd,tk->td", out_TxKxD, weights_TxK)
