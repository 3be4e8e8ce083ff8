"""What each config value must be: the range of every numeric key of config.default_config(),
the few names a choice key takes, and the objectives (the one registry: what each trains on,
with which networks, and where its class is). config.check_values applies them (with the
checks of how keys go together); compression/config.py adds its sections' rules on the same
contract."""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

FLOAT32_MAX = 3.4028234663852886e38  # steps compute in float32: a larger value is infinite there


def is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def is_finite(v: Any) -> bool:
  return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and abs(v) <= FLOAT32_MAX)


def _numbers(v: Any, ok: Callable[[Any], bool]) -> bool:
  return isinstance(v, (tuple, list)) and all(is_finite(x) and ok(x) for x in v)


# Every numeric key of default_config(): what its value must be. NaN and infinities (in float32,
# what the steps compute in) are never accepted: a NaN learning rate would only show up steps
# later as a non-finite loss.
_POSITIVE_INT = (lambda v: is_int(v) and v > 0, "a positive integer")
_RATE = (lambda v: is_finite(v) and 0 <= v < 1, "a number in [0, 1)")
_NON_NEGATIVE = (lambda v: is_finite(v) and v >= 0, "a finite number >= 0")
NUMERIC_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: is_int(v) and 0 <= v < 2**63, "an integer in [0, 2**63)"),
    "batch_size": _POSITIVE_INT,
    "eval_batch_size": _POSITIVE_INT,
    "total_epochs": (lambda v: v is None or is_finite(v) and v > 0, "a finite number > 0"),
    "log_every": _POSITIVE_INT,
    "eval_every": _POSITIVE_INT,
    "checkpoint_every": _POSITIVE_INT,
    "checkpoint_keep": _POSITIVE_INT,
    "grad_accum_steps": _POSITIVE_INT,
    "pipeline.microbatches": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: one per stage)"),
    "pipeline.repeats": _POSITIVE_INT,
    "steps_per_call": _POSITIVE_INT,
    "task_features": _POSITIVE_INT,
    "samples.per_class": _POSITIVE_INT,
    "optimizer.learning_rate": _NON_NEGATIVE,
    "optimizer.momentum": _RATE,
    "optimizer.b1": _RATE,
    "optimizer.b2": _RATE,
    "optimizer.eps": _NON_NEGATIVE,
    "optimizer.weight_decay": _NON_NEGATIVE,
    "optimizer.grad_clip_norm": _NON_NEGATIVE,
    "schedule.warmup_steps": (lambda v: is_int(v) and v >= 0, "an integer >= 0"),
    "schedule.end_factor": _NON_NEGATIVE,
    "schedule.boundaries": (lambda v: _numbers(v, lambda x: 0 < x < 1) and list(v) == sorted(set(v)),
                            "increasing fractions in (0, 1), e.g. (0.5, 0.75)"),
    "schedule.decay_factor": (lambda v: is_finite(v) and v > 0, "a finite number > 0"),
    "data.seq_len": _POSITIVE_INT,
    "data.target_len": _POSITIVE_INT,
    "data.scale": (lambda v: is_finite(v) and v != 0, "a finite non-zero number"),
    "data.mean": (lambda v: _numbers(v, lambda x: True), "a tuple of finite numbers, one per "
                  "channel (or one for all), e.g. (0.485, 0.456, 0.406)"),
    "data.std": (lambda v: _numbers(v, lambda x: x > 0), "a tuple of finite numbers > 0, one per "
                 "channel (or one for all), e.g. (0.229, 0.224, 0.225)"),
    "data.image_size": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: images as stored)"),
    "data.eval_crop": (lambda v: is_finite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "data.workers": (lambda v: is_int(v) and v >= -1, "an integer >= 0, or -1 (one per core "
                     "where images are decoded from files)"),
}


# Keys whose value is one of a few names (the others are checked where they are used: models,
# optimizers, schedules, sharding presets, data sets).
CHOICES = {
    "dtype": ("float32", "bfloat16", "float16"),
    "parallel.strategy": ("jit", "pmap"),
    "nan_policy": ("stop", "skip"),
    "data.kind": ("classification", "lm", "seq2seq", "paired"),
    "pipeline.schedule": ("gpipe", "circular", "1f1b"),  # models/layout.py, models/pipeline.py
}


@dataclasses.dataclass(frozen=True)
class ObjectiveEntry:
  """One objective of config.objective.name (objectives/): its class, and what the config checks
  need before anything is imported."""

  cls: str  # MODULE.CLASS under bigmodel_jax.objectives
  data_kinds: tuple[str, ...]  # the data.kind values it trains on
  # its networks when several (top-level parameter groups): the first trained by
  # config.optimizer, each other one by config.optimizers.NAME
  networks: tuple[str, ...] = ()
  model: str = ""  # the model it trains ("": any model no other objective names)
  fixed: tuple[tuple[str, Any], ...] = ()  # constructor arguments the entry sets, not the user
  distills: bool = False  # config.distill.teacher may mix a teacher's outputs into its loss


OBJECTIVES: dict[str, ObjectiveEntry] = {
    "classification": ObjectiveEntry("classify.Classify", ("classification", "paired"),
                                     fixed=(("kind", "classification"),), distills=True),
    "lm": ObjectiveEntry("classify.Classify", ("lm",), fixed=(("kind", "lm"),), distills=True),
    "seq2seq": ObjectiveEntry("classify.Classify", ("seq2seq",), fixed=(("kind", "seq2seq"),),
                              distills=True),
    "vae": ObjectiveEntry("vae.VAE", ("classification",), model="vae"),
    "gan": ObjectiveEntry("gan.GAN", ("classification",), ("generator", "discriminator"), "gan"),
    "diffusion": ObjectiveEntry("diffusion.Diffusion", ("classification",), model="unet"),
    "contrastive": ObjectiveEntry("contrastive.Contrastive", ("paired",), model="dual_encoder"),
    "captioning": ObjectiveEntry("captioning.Captioning", ("paired",), model="captioner"),
}
