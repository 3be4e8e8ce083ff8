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

import contextvars
import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigmodel_jax.models.layers import AUX, setting


@dataclasses.dataclass(frozen=True)
class Schedule:
  stages: int
  microbatches: int
  repeats: int = 1
  # (array, stage dimension or None, batch dimension or None) -> the array laid out with that
  # dimension over the stage axis and that one over the batch axes other than stage (set by the
  # mesh plan; identity outside a sharded step). Outside the pipeline the batch is split over
  # the stages too (embeddings and head are not computed P times); inside, a microbatch lies
  # whole on each stage.
  layout: Callable[[jax.Array, int | None, int | None], jax.Array] = lambda x, stage, batch: x

  @property
  def ticks(self) -> int:
    return self.microbatches * self.repeats + self.stages - 1

  @property
  def bubble(self) -> float:
    """The fraction of a step each stage idles: (P-1)/(M R + P - 1)."""
    return (self.stages - 1) / self.ticks

  def problem(self, depth: int, batch: int) -> str | None:
    """Why this schedule cannot run `depth` blocks over a batch of `batch`, or None."""
    p, m, r = self.stages, self.microbatches, self.repeats
    if depth % (p * r):
      return (f"{depth} blocks do not split into {p} stages x {r} repeats: the depth must be a "
              f"multiple of {p * r}")
    if batch % m:
      return f"pipeline.microbatches={m} does not divide the per-stage batch of {batch}"
    if r > 1 and m < p:
      return (f"a circular pipeline (repeats={r}) needs at least as many microbatches as "
              f"stages: microbatches={m} < {p}")
    return None


_SCHEDULE: contextvars.ContextVar[Schedule | None] = contextvars.ContextVar("pipeline",
                                                                          default=None)


def pipelined(schedule: Schedule | None):
  """While a step is traced, the scanned blocks run as this pipeline (None: they do not)."""
  return setting(_SCHEDULE, schedule)


def active() -> Schedule | None:
  return _SCHEDULE.get()


_IN_STAGE: contextvars.ContextVar[bool] = contextvars.ContextVar("in_stage", default=False)


def in_stage() -> bool:
  """True while a stage's layers are traced: their activations' batch is not split over the
  stage axis (the stages' vmap is)."""
  return _IN_STAGE.get()


def _traced_in_stage(fn: Callable) -> Callable:
  def wrapped(*args):
    with setting(_IN_STAGE, True):
      return fn(*args)
  return wrapped


# layer(params of one layer, x_BxLxD, args, rng) -> (x_BxLxD, what the layer sowed)
Layer = Callable[[Any, jax.Array, tuple, jax.Array], tuple[jax.Array, Any]]


def run_scanned(stack: nn.Module, block: nn.Module, x_BxLxD: jax.Array, args: tuple,
                s: Schedule, remat: Callable | None, dropout: bool) -> jax.Array:
  """Called in a compact method for an nn.scan of `block` (transformer.blocks): its stacked
  parameters run as pipeline stages, each layer the unbound `block` (rematerialized with the
  policy `remat`, None: not); what the blocks sow goes where the scan would have put it."""

  def layer(params, x, layer_args, rng):
    y, state = block.apply({"params": params}, x, *layer_args, rngs={"dropout": rng},
                           mutable=[AUX])
    return y, state.get(AUX, {})

  if remat is not None:
    layer = jax.checkpoint(layer, policy=remat)
  rng = stack.make_rng("dropout") if dropout else jax.random.key(0)
  x_BxLxD, sown = run(layer, stack.variables["params"], x_BxLxD, args, rng, s)
  if jax.tree.leaves(sown):
    stack.sow(AUX, "pipelined", sown)
  return x_BxLxD


def run(layer: Layer, params: Any, x_BxLxD: jax.Array, args: tuple, rng: jax.Array,
        s: Schedule) -> tuple[jax.Array, Any]:
  """The stacked layers over x, pipelined. args: arrays with the batch first (masks, positions,
  an encoder's memory) or None, each microbatch's part going with it. Returns the output and
  what the layers sowed, stacked per layer as a scan would and averaged over microbatches."""
  p_, m_, r_ = s.stages, s.microbatches, s.repeats
  depth = jax.tree.leaves(params)[0].shape[0]
  problem = s.problem(depth, x_BxLxD.shape[0])
  if problem:
    raise ValueError(problem)
  k_ = depth // (p_ * r_)
  # R x P x K x ...: stage p's layers of repeat r at [r, p]
  params = jax.tree.map(lambda w: s.layout(w.reshape(r_, p_, k_, *w.shape[1:]), 1, None), params)
  micro = lambda a: None if a is None else s.layout(
      a.reshape(m_, a.shape[0] // m_, *a.shape[1:]), None, 1)
  # the microbatches; stage P-1 writes each one's output back in its place, where stage 0 reads
  # it again in the next repeat (M >= P: it was written before it is read)
  buffer = micro(x_BxLxD)
  args = tuple(micro(a) for a in args)

  def stage(params_K, x, stage_args, rng):
    def one(x, layer_params_and_index):
      layer_params, k = layer_params_and_index
      return layer(layer_params, x, stage_args, jax.random.fold_in(rng, k))
    return jax.lax.scan(one, x, (params_K, jnp.arange(k_)))

  stages = jax.vmap(_traced_in_stage(stage), spmd_axis_name="stage")
  p_index = jnp.arange(p_)
  stage_rngs = jax.vmap(lambda i: jax.random.fold_in(rng, i))  # one key per (tick, stage)

  def tick(carry, t):
    state, buffer, sown_sum = carry
    item = t - p_index  # per stage
    valid = (item >= 0) & (item < m_ * r_)
    micro_p, repeat_p = item % m_, jnp.clip(item // m_, 0, r_ - 1)
    inputs = s.layout(jnp.concatenate([buffer[t % m_][None], state[:-1]]), 0, 1)
    params_P = jax.tree.map(lambda w: s.layout(w[0] if r_ == 1 else jax.vmap(
        lambda w_r, r: w_r[r], (1, 0))(w, repeat_p), 0, None), params)
    stage_args = tuple(None if a is None else a[micro_p] for a in args)
    out, sown = stages(params_P, inputs, stage_args, stage_rngs(t * p_ + p_index))
    out = s.layout(out, 0, 1)
    done = t - (p_ - 1)  # the item the last stage finished
    slot = done % m_
    buffer = buffer.at[slot].set(jnp.where(done >= 0, out[-1], buffer[slot]))
    # what each layer sowed, summed over the microbatches that really ran it: R x P x K x ...
    add = lambda acc, v: acc.at[repeat_p, p_index].add(
        jnp.where(valid.reshape(-1, *[1] * (v.ndim - 1)), v, 0).astype(acc.dtype))
    sown_sum = jax.tree.map(add, sown_sum, sown)
    return (out, buffer, sown_sum), None

  state = s.layout(jnp.zeros((p_, *buffer.shape[1:]), x_BxLxD.dtype), 0, 1)
  sown_shape = jax.eval_shape(stages, jax.tree.map(lambda w: w[0], params), state,
                              tuple(None if a is None else a[jnp.zeros(p_, int)] for a in args),
                              stage_rngs(p_index))[1]
  sown_sum = jax.tree.map(lambda v: jnp.zeros((r_, *v.shape), jnp.float32), sown_shape)
  (_, buffer, sown_sum), _ = jax.lax.scan(tick, (state, buffer, sown_sum), jnp.arange(s.ticks))
  sown = jax.tree.map(lambda v: (v / m_).reshape(depth, *v.shape[3:]), sown_sum)
  return buffer.reshape(x_BxLxD.shape), sown
