"""config.check_values: every numeric key has a range, checked before anything runs."""

import math

import pytest

from bigmodel_jax import config as config_lib
from bigmodel_jax.compression import config as compression_config
from bigmodel_jax.faults import ConfigError

RULES = {**config_lib.NUMERIC_RULES, **compression_config.NUMERIC_RULES}

# Numeric keys checked elsewhere: total_steps with total_epochs (check_values), mesh sizes by
# sharding.mesh_shape (they need the device count).
CHECKED_ELSEWHERE = {"total_steps", "mesh.data", "mesh.fsdp", "mesh.tensor"}


def _config():
  c = config_lib.default_config()
  c.model.name, c.data.name = "mlp", "mnist1d"
  return c


def _numeric_keys() -> dict[str, object]:
  flat = config_lib.flatten(config_lib.default_config().to_dict())
  numeric = (int, float, tuple, list)
  return {k: v for k, v in flat.items()
          if (isinstance(v, numeric) and not isinstance(v, bool)) or k == "total_epochs"}


def test_every_numeric_key_has_a_rule():
  assert set(_numeric_keys()) - CHECKED_ELSEWHERE == set(RULES)
  config_lib.check_values(_config())  # the defaults pass


@pytest.mark.parametrize("key", sorted(RULES))
def test_no_numeric_key_takes_nan_infinity_or_a_negative_size(key):
  default = _numeric_keys()[key]
  if isinstance(default, tuple):
    bad = [(math.nan,), (math.inf,)]
  elif isinstance(default, int):
    bad = [-1, 2**63] if key == "seed" else [-2] if key == "data.workers" else [-1]  # -1: auto
  else:
    bad = [math.nan, math.inf, -math.inf, 1e39]  # 1e39: infinite in float32
  for value in bad:
    c = _config()
    node, _, leaf = key.rpartition(".")
    (c[node] if node else c)[leaf] = value
    with pytest.raises(ConfigError, match=f"^{key} must be "):
      config_lib.check_values(c)


def test_a_workdir_from_before_a_key_existed_resumes_but_a_changed_value_does_not():
  # config.json of a run made before objective, samples and optimizers were keys
  new = config_lib.to_dict(config_lib.default_config())
  old = {k: v for k, v in new.items() if k not in ("objective", "samples", "optimizers")}
  assert config_lib.changed_keys(old, new) == []
  changed = {**new, "objective": {"name": "vae"}}
  assert config_lib.changed_keys(old, changed) == ["objective.name"]
