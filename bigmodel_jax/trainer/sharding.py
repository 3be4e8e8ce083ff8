"""The device mesh, the sharding presets, and the batch, state and activation shardings.

Models only name their arrays' axes (`nn.with_logical_partitioning` on parameters,
`layout.constrain` on activations); which mesh axis each logical name lands on is decided
here, and reaches a model as the frozen Layout the plan builds (plan.layout, models/layout.py),
so a parallelism strategy is a config change:

  dp       parameters replicated; the batch over `data`                       mesh {data: all}
  fsdp     every parameter and optimizer-state array split over `fsdp` along its largest dimension
           that divides (ZeRO-3 style; XLA gathers it for the step); the batch over data and fsdp
                                                                              mesh {fsdp: all}
  tp       Megatron-style: MLP hidden units, attention heads, the vocabulary, recurrent units and
           convolution output channels over `tensor`; the batch over `data`    mesh {data: rest, tensor: local devices, at most 8}
  fsdp_tp  both                                                               mesh {fsdp: rest, tensor: local devices, at most 4}
  ep       expert parallelism: each MoE layer's experts split over `expert` (models/moe.py); the
           batch over data and expert, so tokens reach their experts' devices by an all-to-all
                                                                              mesh {data: rest, expert: local devices, at most 8}
  fsdp_ep  ep with FSDP over `fsdp`                                           mesh {fsdp: rest, expert: local devices, at most 4}

Two axes split what no preset splits, set by size on any preset:
  stage    pipeline parallelism (models/pipeline.py): the scanned Transformer blocks' "layers"
           axis in stages over `stage`, the batch in config.pipeline.microbatches
  context  context parallelism: the sequence ("length") over `context`; decoder_lm attention
           becomes ring attention (models/attention.py), the sequence in zigzag order; under
           an FSDP preset the parameters are split over fsdp and context together

Whenever the mesh has an `expert` axis (any preset, e.g. tp with config.mesh.expert=2) the
experts' logical axis "expert" lands on it, and num_experts must divide by its size.

`config.mesh.{data,stage,fsdp,expert,context,tensor}` left unset (None) take the preset's sizes; -1 fills the devices
left. `config.sharding_rules` ("mlp=tensor,embed=fsdp", "name=" to replicate) overrides the
preset's logical rules. A dimension that does not divide by its mesh axis stays replicated.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from bigmodel_jax.config import MESH_AXES
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.models.layout import Layout, Schedule, logical_axes

# Mesh axes in the order they are laid out over devices: data outermost, tensor innermost (the
# fastest interconnect, within a host).
AXIS_ORDER = MESH_AXES
# the batch (and activations' "batch" axis) is split over these; MoE layers move their tokens'
# slots from "expert" to the experts' axis and back (all-to-all)
BATCH_AXES = ("data", "stage", "fsdp", "expert")

TP_RULES = (("mlp", "tensor"), ("heads", "tensor"), ("vocab", "tensor"), ("rnn", "tensor"),
            ("conv_out", "tensor"))

# name -> (logical rules, FSDP on?, default mesh given the number of local devices)
PRESETS: dict[str, tuple[tuple[tuple[str, str], ...], bool, Any]] = {
    "dp": ((), False, lambda local: {"data": -1}),
    "fsdp": ((), True, lambda local: {"fsdp": -1}),
    "tp": (TP_RULES, False, lambda local: {"data": -1, "tensor": min(local, 8)}),
    "fsdp_tp": (TP_RULES, True, lambda local: {"fsdp": -1, "tensor": min(local, 4)}),
    "ep": ((), False, lambda local: {"data": -1, "expert": min(local, 8)}),
    "fsdp_ep": ((), True, lambda local: {"fsdp": -1, "expert": min(local, 4)}),
}
FSDP_AXES = ("fsdp", "context")
FSDP_MIN_SIZE = 1024  # arrays smaller than this stay replicated under fsdp (biases, norms)


class Plan:
  """A config's sharding decisions: the mesh, the logical rules, FSDP, the batch axes."""

  def __init__(self, preset_name: str, rules_override: str, mesh_config: dict[str, int | None],
               devices: list | None = None, pipeline_config: dict[str, int] | None = None):
    if preset_name not in PRESETS:
      raise ConfigError(f"unknown sharding preset '{preset_name}'; known: {', '.join(PRESETS)}")
    rules, self.fsdp, default_mesh = PRESETS[preset_name]
    devices = jax.devices() if devices is None else devices
    sizes = mesh_shape(mesh_config, default_mesh(jax.local_device_count()), len(devices))
    axes = {"expert": "expert"} if "expert" in sizes else {}
    if sizes.get("stage", 1) > 1:
      axes |= {"layers": "stage", "stage": "stage"}
    if sizes.get("context", 1) > 1:
      axes |= {"length": "context"}
    self.rules = dict(rules) | axes | parse_rules(rules_override)
    self.mesh = jax.make_mesh(tuple(sizes.values()), tuple(sizes), devices=devices,
                              axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))
    self.batch_axes = tuple(a for a in BATCH_AXES if a in self.mesh.axis_names)
    for logical, axis in self.rules.items():
      if axis is not None and axis not in self.mesh.axis_names:
        raise ConfigError(f"sharding rule {logical}={axis}: the mesh has no axis '{axis}' "
                          f"(mesh {dict(self.mesh.shape)})")
    stages, pipe = self.mesh.shape.get("stage", 1), pipeline_config or {}
    self.schedule = None if stages == 1 else Schedule(
        stages, pipe.get("microbatches") or stages, pipe.get("repeats", 1),
        pipe.get("schedule", "gpipe"))
    context = self.mesh.shape.get("context", 1)
    if self.schedule and context > 1:  # ring attention's shard_map inside the stages' vmap
      raise ConfigError(f"mesh.stage={stages} and mesh.context={context} together are not "
                        "supported yet: use one of them")
    # what the mesh decides for the model, passed to it (models/layout.py)
    self.layout = Layout(self.mesh, tuple(self.rules.items()), self.batch_axes, self.schedule,
                         "context" if context > 1 else None)

  @property
  def batch_sharding(self) -> NamedSharding:
    """Leading (batch) dimension split over the batch axes, the rest replicated."""
    return NamedSharding(self.mesh, P(self.batch_axes))

  @property
  def data_parallel_size(self) -> int:
    return math.prod(self.mesh.shape[a] for a in self.batch_axes)

  @property
  def stage_batch_axes(self) -> tuple[str, ...]:
    """The batch axes within one pipeline stage (all of them but `stage`): a microbatch's."""
    return self.layout.stage_batch_axes

  def check_experts(self, num_experts: int) -> None:
    """ConfigError unless the model's experts divide over the mesh's expert axis."""
    ways = self.mesh.shape.get("expert", 1)
    if num_experts and num_experts % ways:
      raise ConfigError(f"model.num_experts={num_experts} does not divide over the mesh's "
                        f"expert axis of {ways} devices; set --config.mesh.expert to a divisor "
                        f"of {num_experts}")

  def check_pipeline(self, depths: list[int], batches: dict[str, int]) -> None:
    """ConfigError unless every stack of `depths` blocks splits into the stages and each
    named batch (per step, over all devices) into the microbatches."""
    if self.schedule is None:
      return
    within = math.prod(self.mesh.shape[a] for a in self.stage_batch_axes)
    for depth in depths:
      for name, batch in batches.items():
        problem = self.schedule.problem(depth, batch)
        if not problem and (batch // self.schedule.microbatches) % within:
          problem = (f"microbatches of {batch // self.schedule.microbatches} do not divide over "
                     f"the {within} data-parallel devices of a stage: use at most "
                     f"{batch // within} microbatches")
        if problem:
          raise ConfigError(f"mesh.stage={self.schedule.stages} ({name}={batch}): {problem}")

  def check_context(self, model_name: str, seq_len: int) -> None:
    """ConfigError unless the sequence splits into the context axis's zigzag chunks."""
    ways = self.layout.context_size
    if ways == 1:
      return
    if model_name != "decoder_lm":
      raise ConfigError(f"mesh.context={ways} splits a decoder_lm's sequence (ring "
                        f"attention); model '{model_name}' does not take it")
    if seq_len % (2 * ways):
      raise ConfigError(f"mesh.context={ways}: data.seq_len={seq_len} must split into "
                        f"{2 * ways} equal chunks (two per device, zigzag)")

  def check_batch_size(self, name: str, size: int) -> None:
    ways = self.data_parallel_size
    if size % ways:
      raise ConfigError(f"{name}={size} does not divide over the {ways} data-parallel devices "
                        f"(mesh axes {self.batch_axes}); use a multiple of {ways}")
    if size % jax.process_count():
      raise ConfigError(f"{name}={size} does not divide over {jax.process_count()} processes")

  def spec(self, shape: tuple[int, ...], names: tuple[str | None, ...] | None) -> P:
    """The PartitionSpec of a parameter or optimizer-state array from its logical axis names
    (None: unnamed; layout.logical_axes), and under FSDP its largest free dimension that
    divides over the fsdp axis (with the context axis, where there is one: FSDP_AXES)."""
    axes, used = logical_axes(self.mesh, {"batch": self.batch_axes, **self.rules}, shape, names)
    # FSDP splits over `fsdp` and, where the sequence is split, over `context` too (those
    # devices would otherwise each hold the same parameters)
    group = tuple(a for a in FSDP_AXES if a in self.mesh.axis_names and a not in used
                  ) if self.fsdp else ()
    ways = math.prod(self.mesh.shape[a] for a in group)
    if ways > 1 and math.prod(shape) >= FSDP_MIN_SIZE:
      free = [d for d in range(len(shape)) if axes[d] is None and shape[d] % ways == 0]
      if free:
        axes[max(free, key=lambda d: (shape[d], -d))] = group if len(group) > 1 else group[0]
    return P(*axes)

  def state_shardings(self, abstract_boxed: Any) -> Any:
    """NamedShardings for a pytree whose leaves may carry logical names (boxed, from
    eval_shape); the result has the structure of the unboxed tree."""

    def one(leaf: Any) -> Any:
      if isinstance(leaf, nn.LogicallyPartitioned) and not hasattr(leaf.value, "shape"):
        return leaf.value  # an empty node (optax.MaskedNode of a frozen parameter)
      if isinstance(leaf, nn.LogicallyPartitioned):
        return NamedSharding(self.mesh, self.spec(leaf.value.shape, leaf.names))
      return NamedSharding(self.mesh, self.spec(leaf.shape, None))

    return jax.tree.map(one, abstract_boxed,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def parse_rules(text: str) -> dict[str, str | None]:
  """"mlp=tensor,embed=fsdp,heads=" -> {"mlp": "tensor", "embed": "fsdp", "heads": None}."""
  rules: dict[str, str | None] = {}
  for item in filter(None, (s.strip() for s in text.split(","))):
    logical, eq, axis = item.partition("=")
    if not eq or not logical.strip():
      raise ConfigError(f"sharding_rules: '{item}' is not LOGICAL=MESH_AXIS (e.g. mlp=tensor)")
    rules[logical.strip()] = axis.strip() or None
  return rules


def mesh_shape(mesh_config: dict[str, int | None], default: dict[str, int],
               num_devices: int) -> dict[str, int]:
  """Axis sizes in AXIS_ORDER: the preset's default, overridden by the sizes the config sets,
  the one -1 filled in; ConfigError if they cannot fit the devices."""
  unknown = sorted(set(mesh_config) - set(AXIS_ORDER))
  if unknown:
    raise ConfigError(f"mesh: unknown axis {unknown}; axes: {', '.join(AXIS_ORDER)}")
  given = {k: int(v) for k, v in mesh_config.items() if v is not None}
  merged = {**default, **given}
  if sum(v == -1 for v in merged.values()) > 1:  # the user's -1 wins over the preset's
    merged = {k: v for k, v in merged.items() if k in given or v != -1}
  sizes = {n: merged[n] for n in AXIS_ORDER if n in merged}
  fill = [n for n, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise ConfigError(f"mesh: at most one axis may be -1, got {sizes}")
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise ConfigError(f"mesh: axis sizes must be positive or -1, got {sizes}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % fixed:
      raise ConfigError(f"mesh {sizes}: {num_devices} devices do not divide by {fixed}")
    sizes[fill[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise ConfigError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, "
                      f"but {num_devices} are available")
  return sizes


def per_device_bytes(tree: Any) -> int:
  """Bytes of `tree` that the first device holds (from each array's sharding)."""
  total = 0
  for x in jax.tree.leaves(tree):
    shard = x.sharding.shard_shape(x.shape)
    total += math.prod(shard) * np.dtype(x.dtype).itemsize
  return total


def global_batch(local: Any, batch_sharding: NamedSharding) -> Any:
  """This process's rows of a batch -> what the jitted steps take. One process: the numpy
  arrays themselves (jit places them by its in_shardings, ~10x cheaper than a device_put);
  several: global jax.Arrays assembled from every process's rows."""
  if jax.process_count() == 1:
    return local
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(batch_sharding, x), local)
