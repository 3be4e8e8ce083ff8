"""Pipeline parallelism over a Transformer's scanned blocks (config.mesh.stage, config.pipeline).

The scanned blocks' parameters are one stack with a leading "layers" axis of depth
P stages x R repeats x K layers. Layer l = (r P + p) K + k runs on stage p: with R = 1 (GPipe)
stage p holds K consecutive layers; with R > 1 (circular, as MaxText's) it holds R groups of K,
and a microbatch goes round the ring of stages R times. The batch is cut into M microbatches;
at tick t stage p works on item t - p (microbatch (t - p) mod M, repeat (t - p) div M), so a
step takes M R + P - 1 ticks, of which P - 1 per stage are idle: the bubble (P-1)/(M R + P - 1).

Written in jax operations over the whole mesh (no per-device program): the stages' states are
one P x ... array whose first axis lies over the `stage` mesh axis, the stage computation is a
vmap over it (spmd_axis_name="stage": the blocks' own activation shardings hold inside), and
handing each stage's output to the next is a shift along that axis (a collective permute).
The parameters are the same stack as without a pipeline, so a checkpoint moves between meshes.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import AUX
from bigmodel_jax.models.layout import Layout

# layer(params of one layer, x_BxLxD, inputs, rng) -> (x_BxLxD, what the layer sowed); inputs:
# a pytree of arrays with the batch first (transformer.BlockInputs)
Layer = Callable[[Any, jax.Array, tuple, jax.Array], tuple[jax.Array, Any]]


def layer_of(block: nn.Module, remat: Callable | None) -> Layer:
  """A Layer that applies the unbound `block` (built with layout.inside_stage()) to one layer's
  parameters, rematerialized with the policy `remat` (None: not)."""

  def layer(params, x, layer_args, rng):
    y, state = block.apply({"params": params}, x, layer_args, rngs={"dropout": rng},
                           mutable=[AUX])
    return y, state.get(AUX, {})

  return layer if remat is None else jax.checkpoint(layer, policy=remat)


def run_scanned(stack: nn.Module, block: nn.Module, x_BxLxD: jax.Array, args: Any,
                layout: Layout, remat: Callable | None, dropout: bool) -> jax.Array:
  """Called in a compact method for an nn.scan of `block` (transformer.blocks): its stacked
  parameters run forward as the pipeline layout.pipeline (gpipe or circular; under 1f1b this
  is the forward pass of evaluation, training going through one_f_one_b), each layer
  layer_of(block, remat); what the blocks sow goes where the scan would have put it."""
  layer = layer_of(block, remat)
  rng = stack.make_rng("dropout") if dropout else jax.random.key(0)
  x_BxLxD, sown = run(layer, stack.variables["params"], x_BxLxD, args, rng, layout)
  if jax.tree.leaves(sown):
    stack.sow(AUX, "pipelined", sown)
  return x_BxLxD


def run(layer: Layer, params: Any, x_BxLxD: jax.Array, args: Any, rng: jax.Array,
        layout: Layout) -> tuple[jax.Array, Any]:
  """The stacked layers over x, pipelined. args: arrays with the batch first (masks, positions,
  an encoder's memory) or None, each microbatch's part going with it. Returns the output and
  what the layers sowed, stacked per layer as a scan would and averaged over microbatches."""
  s, constrain = layout.pipeline, layout.stage_constrain
  p_, m_, r_ = s.stages, s.microbatches, s.repeats
  depth = jax.tree.leaves(params)[0].shape[0]
  problem = s.problem(depth, x_BxLxD.shape[0])
  if problem:
    raise ValueError(problem)
  k_ = depth // (p_ * r_)
  # R x P x K x ...: stage p's layers of repeat r at [r, p]
  params = jax.tree.map(lambda w: constrain(w.reshape(r_, p_, k_, *w.shape[1:]), 1, None), params)
  micro = lambda a: constrain(
      a.reshape(m_, a.shape[0] // m_, *a.shape[1:]), None, 1)
  # the microbatches; stage P-1 writes each one's output back in its place, where stage 0 reads
  # it again in the next repeat (M >= P: it was written before it is read)
  buffer = micro(x_BxLxD)
  args = jax.tree.map(micro, args)

  def stage(params_K, x, stage_args, rng):
    def one(x, layer_params_and_index):
      layer_params, k = layer_params_and_index
      return layer(layer_params, x, stage_args, jax.random.fold_in(rng, k))
    return jax.lax.scan(one, x, (params_K, jnp.arange(k_)))

  stages = jax.vmap(stage, spmd_axis_name="stage")
  p_index = jnp.arange(p_)
  stage_rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))  # one key per (tick, stage)

  def tick(carry, t):
    state, buffer, sown_sum = carry
    item = t - p_index  # per stage
    valid = (item >= 0) & (item < m_ * r_)
    micro_p, repeat_p = item % m_, jnp.clip(item // m_, 0, r_ - 1)
    inputs = constrain(jnp.concatenate([buffer[t % m_][None], state[:-1]]), 0, 1)
    params_P = jax.tree.map(lambda w: constrain(w[0] if r_ == 1 else jax.vmap(
        lambda w_r, r: w_r[r], (1, 0))(w, repeat_p), 0, None), params)
    stage_args = jax.tree.map(lambda a: a[micro_p], args)
    out, sown = stages(params_P, inputs, stage_args, stage_rngs(t * p_ + p_index))
    out = constrain(out, 0, 1)
    done = t - (p_ - 1)  # the item the last stage finished
    slot = done % m_
    buffer = buffer.at[slot].set(jnp.where(done >= 0, out[-1], buffer[slot]))
    # what each layer sowed, summed over the microbatches that really ran it: R x P x K x ...
    add = lambda acc, v: acc.at[repeat_p, p_index].add(
        jnp.where(valid.reshape(-1, *[1] * (v.ndim - 1)), v, 0).astype(acc.dtype))
    sown_sum = jax.tree.map(add, sown_sum, sown)
    return (out, buffer, sown_sum), None

  state = constrain(jnp.zeros((p_, *buffer.shape[1:]), x_BxLxD.dtype), 0, 1)
  sown_shape = jax.eval_shape(stages, jax.tree.map(lambda w: w[0], params), state,
                              jax.tree.map(lambda a: a[jnp.zeros(p_, int)], args),
                              stage_rngs(p_index))[1]
  sown_sum = jax.tree.map(lambda v: jnp.zeros((r_, *v.shape), jnp.float32), sown_shape)
  (_, buffer, sown_sum), _ = jax.lax.scan(tick, (state, buffer, sown_sum), jnp.arange(s.ticks))
  sown = jax.tree.map(lambda v: (v / m_).reshape(depth, *v.shape[3:]), sown_sum)
  return buffer.reshape(x_BxLxD.shape), sown


def one_f_one_b(layer: Layer, embed: Callable, head: Callable, params: Any, stack: str,
                micro: Any, rng: jax.Array, layout: Layout) -> tuple[tuple[jax.Array, Any], Any]:
  """A batch's loss and its gradient by the 1F1B schedule (PipeDream-Flush, Megatron's): the
  step owns both passes, and a microbatch's backward pass starts as soon as its loss is known,
  so a stage keeps the inputs of at most 2P - 1 microbatches (recomputing its layers from them)
  however many M there are; GPipe keeps every tick's activations until the end.

  In lockstep over the stages, as run: at tick t stage p runs the forward pass of microbatch
  t - p and the backward pass of microbatch t - 2(P - 1) + p; the last stage's output goes
  through the head (and the loss) and back in the tick it is made. M + 2P - 2 ticks.

  layer: as run's. embed(params, microbatch, rng) -> (x_BxLxD, the blocks' inputs), the model
  before its stack; head(params, x_BxLxD, microbatch) -> (the microbatch's loss, already
  divided by the batch's total weight; its metric sums). params: all of them, params[stack] the
  scanned stack (a leading layers axis). micro: the batch cut into M microbatches (leading axis
  M). Returns ((the loss, the metric sums), the gradients like params)."""
  s, constrain = layout.pipeline, layout.stage_constrain
  p_, m_ = s.stages, s.microbatches
  depth = jax.tree.leaves(params[stack])[0].shape[0]
  k_, slots = depth // p_, 2 * p_ - 1
  stack_P = jax.tree.map(lambda w: constrain(w.reshape(p_, k_, *w.shape[1:]), 0, None),
                         params[stack])
  take = lambda tree, i: jax.tree.map(lambda a: a[jnp.clip(i, 0, m_ - 1)], tree)  # noqa: E731
  at = lambda i: take(micro, i)  # noqa: E731  (microbatch i; i is clipped, the caller masks)
  embed_rng = lambda i: jax.random.fold_in(jax.random.fold_in(rng, 0), i)  # noqa: E731
  stage_rngs = jax.vmap(lambda i, p: jax.random.fold_in(jax.random.fold_in(rng, 1), i * p_ + p))
  p_index = jnp.arange(p_)

  def stage_forward(params_K, x, inputs, stage_rng):
    def one(x, layer_params_and_index):
      layer_params, k = layer_params_and_index
      return layer(layer_params, x, inputs, jax.random.fold_in(stage_rng, k))[0], None
    return jax.lax.scan(one, x, (params_K, jnp.arange(k_)))[0]

  def stage_backward(params_K, x, inputs, stage_rng, cotangent):
    _, pull = jax.vjp(lambda w, xx: stage_forward(w, xx, inputs, stage_rng), params_K, x)
    return pull(cotangent)

  forward = jax.vmap(stage_forward, spmd_axis_name="stage")
  backward = jax.vmap(stage_backward, spmd_axis_name="stage")
  stash_write = jax.vmap(lambda st, x, i, keep: st.at[i].set(jnp.where(keep, x, st[i])))
  stash_read = jax.vmap(lambda st, i: st[i])
  # the blocks' inputs (masks, positions) of every microbatch, M x ...
  inputs_M = jax.vmap(lambda mb, i: embed(params, mb, embed_rng(i))[1])(micro, jnp.arange(m_))

  def tick(carry, t):
    state, cotangents, stash, grads, loss, sums = carry
    items = t - p_index  # forward: stage p on microbatch t - p
    x_in = constrain(jnp.concatenate([embed(params, at(t), embed_rng(t))[0][None], state[:-1]]),
                     0, 1)
    out = constrain(forward(stack_P, x_in, take(inputs_M, items), stage_rngs(items, p_index)),
                    0, 1)
    stash = stash_write(stash, x_in, items % slots, (items >= 0) & (items < m_))
    done = t - (p_ - 1)  # the last stage's microbatch: its loss, and the cotangent of its output
    valid = (done >= 0) & (done < m_)
    l, pull, s_ = jax.vjp(lambda w, x: head(w, x, at(done)), params, out[-1], has_aux=True)
    head_grads, last = pull(valid.astype(l.dtype))
    loss = loss + jnp.where(valid, l, 0)
    sums = jax.tree.map(lambda acc, v: acc + jnp.where(valid, v, 0), sums, s_)
    back = t - 2 * (p_ - 1) + p_index  # backward: stage p on microbatch t - 2(P - 1) + p
    keep = ((back >= 0) & (back < m_)).reshape(-1, *[1] * (last.ndim))
    cotangent_in = constrain(jnp.where(keep, jnp.concatenate([cotangents[1:], last[None]]), 0),
                             0, 1)
    stack_grads, x_grads = backward(stack_P, stash_read(stash, back % slots),
                                    take(inputs_M, back), stage_rngs(back, p_index),
                                    cotangent_in)
    x_grads = constrain(x_grads, 0, 1)
    _, pull_embed = jax.vjp(lambda w: embed(w, at(back[0]), embed_rng(back[0]))[0], params)
    (embed_grads,) = pull_embed(jnp.where(keep[0], x_grads[0], 0))
    grads = jax.tree.map(lambda g, a, b: g + a + b, grads, head_grads, embed_grads)
    grads = {**grads, stack: jax.tree.map(lambda g, d: g + d.reshape(g.shape), grads[stack],
                                          stack_grads)}
    return (out, x_grads, stash, grads, loss, sums), None

  x_spec = jax.eval_shape(lambda: embed(params, at(0), embed_rng(0))[0])
  zeros = lambda *shape: jnp.zeros((*shape, *x_spec.shape), x_spec.dtype)  # noqa: E731
  sums_spec = jax.eval_shape(lambda: head(params, zeros(), at(0))[1])
  carry = (constrain(zeros(p_), 0, 1), constrain(zeros(p_), 0, 1),
           constrain(zeros(p_, slots), 0, 2),
           jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32),
           jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), sums_spec))
  (_, _, _, grads, loss, sums), _ = jax.lax.scan(tick, carry, jnp.arange(s.ticks))
  return (loss, sums), grads
