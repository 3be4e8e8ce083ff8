"""The device mesh from config, logical-axis rules presets, and the batch and state shardings.

Models only name their parameters' axes (`nn.with_logical_partitioning`); which mesh axis each
logical name lands on is decided here, so a parallelism strategy is a config change.
"""

import math
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from bigmodel_jax.config import ConfigError

# Mesh axes in the order they are laid out over devices: data outermost, tensor innermost (the
# fastest interconnect). Other names follow in alphabetical order.
AXIS_ORDER = ("data", "fsdp", "tensor")

# sharding preset -> (logical-axis rules, mesh axes the batch is split over). A logical name
# that no rule mentions is replicated.
PRESETS: dict[str, tuple[tuple[tuple[str, str | None], ...], tuple[str, ...]]] = {
    "dp": ((), ("data",)),
}


def mesh_shape(mesh_config: dict[str, int], num_devices: int) -> dict[str, int]:
  """Axis sizes with the one -1 filled in, in AXIS_ORDER; ConfigError if they cannot fit."""
  names = sorted(mesh_config, key=lambda n: (AXIS_ORDER.index(n) if n in AXIS_ORDER else 99, n))
  sizes = {n: int(mesh_config[n]) for n in names}
  fill = [n for n, s in sizes.items() if s == -1]
  if len(fill) > 1:
    raise ConfigError(f"mesh: at most one axis may be -1, got {dict(sizes)}")
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise ConfigError(f"mesh: axis sizes must be positive or -1, got {dict(sizes)}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if fill:
    if num_devices % fixed:
      raise ConfigError(f"mesh {dict(sizes)}: {num_devices} devices do not divide by {fixed}")
    sizes[fill[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise ConfigError(f"mesh {dict(sizes)} needs {math.prod(sizes.values())} devices, "
                      f"but {num_devices} are available")
  return sizes


def make_mesh(mesh_config: dict[str, int], devices: list | None = None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  sizes = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(tuple(sizes.values()), tuple(sizes), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(sizes))


def preset(name: str) -> tuple[tuple[tuple[str, str | None], ...], tuple[str, ...]]:
  if name not in PRESETS:
    raise ConfigError(f"unknown sharding preset '{name}'; known: {', '.join(PRESETS)}")
  return PRESETS[name]


def batch_axes(mesh: Mesh, axes: tuple[str, ...]) -> tuple[str, ...]:
  missing = [a for a in axes if a not in mesh.axis_names]
  if missing:
    raise ConfigError(f"the batch is split over mesh axes {axes}, but the mesh has no {missing}")
  return axes


def batch_sharding(mesh: Mesh, axes: tuple[str, ...]) -> NamedSharding:
  """Leading (batch) dimension split over `axes`, the rest replicated."""
  return NamedSharding(mesh, P(axes))


def check_batch_size(name: str, size: int, mesh: Mesh, axes: tuple[str, ...]) -> None:
  ways = math.prod(mesh.shape[a] for a in axes)
  if size % ways:
    raise ConfigError(f"{name}={size} does not divide over the {ways} data-parallel devices "
                      f"(mesh axes {axes}); use a multiple of {ways}")
  if size % jax.process_count():
    raise ConfigError(f"{name}={size} does not divide over {jax.process_count()} processes")


def state_shardings(abstract_boxed: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a state whose leaves carry logical axis names (boxed, from eval_shape).

  The result has the structure of the unboxed state.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)
