"""What the mesh decides for a model, as one frozen value passed in.

The trainer builds a Layout once from the config and the mesh (trainer/sharding.Plan.layout)
and gives it to the model as its `layout` attribute; nothing else carries layout into traced
code (no context variable, no module state). A model built without one (Layout(): no mesh)
runs on one device: activations unconstrained, no pipeline, no ring, BatchNorm unsynced.

  mesh, rules        logical axis name -> mesh axis (or axes): activations named with
                     `constrain` are laid out by them
  batch_axes         the mesh axes a batch is split over; stage_batch_axes: a pipeline
                     stage's (all but `stage`), which hold inside a stage (in_stage)
  pipeline           the pipeline schedule over the scanned blocks (models/pipeline.py) or None
  context_axis       the mesh axis a decoder's sequence is split over (ring attention) or None
  batch_norm_axis    under pmap, the mapped axis BatchNorm averages its statistics over
"""

import dataclasses
import math
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bigmodel_jax.config_rules import CHOICES


# config.pipeline.schedule (models/pipeline.py): gpipe and circular run forward (autodiff owns
# the backward pass, every microbatch's activations kept until it); 1f1b owns both passes, a
# stage holding at most 2P - 1 microbatches' inputs whatever M.
SCHEDULES = CHOICES["pipeline.schedule"]


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A pipeline: P stages, M microbatches, R repeats (circular: R > 1), the schedule's kind."""

  stages: int
  microbatches: int
  repeats: int = 1
  kind: str = "gpipe"  # SCHEDULES

  @property
  def ticks(self) -> int:
    """Forward ticks (1f1b: each tick a forward and a backward; M + 2P - 2 of them)."""
    if self.kind == "1f1b":
      return self.microbatches + 2 * self.stages - 2
    return self.microbatches * self.repeats + self.stages - 1

  @property
  def bubble(self) -> float:
    """The fraction of a step each stage idles: (P-1)/(M R + P - 1) (1f1b: the same share of
    its forward and backward slots, 2(P-1)/(M + 2P - 2))."""
    return (self.stages - 1) * (2 if self.kind == "1f1b" else 1) / self.ticks

  def problem(self, depth: int, batch: int) -> str | None:
    """Why this schedule cannot run `depth` blocks over a batch of `batch`, or None."""
    p, m, r = self.stages, self.microbatches, self.repeats
    if self.kind not in SCHEDULES:
      return f"pipeline.schedule '{self.kind}' unknown; known: {', '.join(SCHEDULES)}"
    if (r > 1) != (self.kind == "circular"):
      return (f"pipeline.schedule={self.kind} with pipeline.repeats={r}: the circular schedule "
              "takes repeats > 1, gpipe and 1f1b take 1")
    if depth % (p * r):
      return (f"{depth} blocks do not split into {p} stages x {r} repeats: the depth must be a "
              f"multiple of {p * r}")
    if batch % m:
      return f"pipeline.microbatches={m} does not divide the per-stage batch of {batch}"
    if r > 1 and m < p:
      return (f"a circular pipeline (repeats={r}) needs at least as many microbatches as "
              f"stages: microbatches={m} < {p}")
    return None


def logical_axes(mesh: Mesh, rules: dict[str, Any], shape: tuple[int, ...],
                 names: tuple[str | None, ...] | None) -> tuple[list[Any], set[str]]:
  """Each dimension's mesh axis (or axes, or None) from its logical name by `rules`, and the
  mesh axes taken. A name mapped to several axes ("batch") takes those an earlier dimension has
  not taken; a dimension that does not divide by its axes stays replicated."""
  axes: list[Any] = [None] * len(shape)
  used: set[str] = set()
  for d, name in enumerate(names or ()):
    axis = rules.get(name) if name else None
    group = (axis,) if isinstance(axis, str) else tuple(a for a in axis or () if a not in used)
    ways = math.prod(mesh.shape[a] for a in group)
    if group and not used & set(group) and shape[d] % ways == 0:
      axes[d] = axis if isinstance(axis, str) else group
      used.update(group)
  return axes, used


@dataclasses.dataclass(frozen=True)
class Layout:
  mesh: Mesh | None = None
  rules: tuple[tuple[str, Any], ...] = ()
  batch_axes: tuple[str, ...] = ()
  pipeline: Schedule | None = None
  context_axis: str | None = None
  batch_norm_axis: str | None = None
  in_stage: bool = False

  @property
  def stage_batch_axes(self) -> tuple[str, ...]:
    """The batch axes within one pipeline stage (all of them but `stage`): a microbatch's."""
    return tuple(a for a in self.batch_axes if a != "stage")

  @property
  def context_size(self) -> int:
    return 1 if self.context_axis is None else self.mesh.shape[self.context_axis]

  def inside_stage(self) -> "Layout":
    """This layout as a pipeline stage's layers see it: their batch is a microbatch, not split
    over `stage` (the stages' vmap is)."""
    return dataclasses.replace(self, in_stage=True)

  def spec(self, shape: tuple[int, ...], names: tuple[str | None, ...] | None) -> P:
    """The PartitionSpec of an activation from its logical axis names."""
    batch = self.stage_batch_axes if self.in_stage else self.batch_axes
    return P(*logical_axes(self.mesh, {"batch": batch, **dict(self.rules)}, shape, names)[0])

  def constrain(self, x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """Names an activation's axes (e.g. ("batch", "length", "embed")) so that the mesh lays it
    out; unchanged without a mesh."""
    if self.mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, self.spec(x.shape, names)))

  def stage_constrain(self, x: jax.Array, stage: int | None, batch: int | None) -> jax.Array:
    """x with dimension `stage` over the stage axis and `batch` over the batch axes but stage
    (a microbatch lies whole on each stage; outside the pipeline the batch is split over the
    stages too, so embeddings and head are not computed P times)."""
    if self.mesh is None:
      return x
    axes: list[Any] = [P.UNCONSTRAINED] * x.ndim
    if stage is not None:
      axes[stage] = "stage"
    within = self.stage_batch_axes
    if batch is not None:
      ways = math.prod(self.mesh.shape[a] for a in within)
      axes[batch] = within if within and x.shape[batch] % ways == 0 else None
    return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P(*axes)))


def layout_of(cls: type, layout: Layout) -> dict[str, Layout]:
  """{"layout": layout} for a module class that takes one (a field `layout`), else {}."""
  return {"layout": layout} if "layout" in {f.name for f in dataclasses.fields(cls)} else {}
