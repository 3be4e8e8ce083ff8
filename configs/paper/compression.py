"""Compression compared in one table: for the digits ResNet, the MNIST-1D CNN and the pycode
Transformer LM, float32 / QAT int8 / QAT int4 / magnitude pruning to 50, 80 and 90% / a student
about half the size trained alone and distilled from the float model / a LoRA fine-tune of the
float model. Post-training quantization, bytes and eval speed come from quantizing each workdir
(benchmarks/compression.py, the last command).

  python -m bigmodel_jax.main --config=configs/paper/compression.py:resnet_qat4 --workdir=runs/paper_compression/resnet_qat4
  python -m bigmodel_jax.sweep --config=configs/paper/compression.py --root=runs/paper_compression
  python -m bigmodel_jax.sweep --config=configs/paper/compression.py:lm --root=runs/paper_compression
  python benchmarks/compression.py --root=runs/paper_compression

The arg is MODEL_ROW (resnet, cnn or lm; a row of ROWS). The distill and lora rows read the
float row of their seed: the sweep runs the float points first and names their workdirs
(ROOT/arg=MODEL_float,seed=S); a single run takes --config.distill.teacher=DIR or
--config.init_from=DIR. The sweep's arg: "" = resnet and cnn, 3 seeds; "lm" = the Transformer,
1 seed (every row costs minutes on this CPU); "MODEL,seeds=N,root=DIR" in general.
"""

import os

from bigmodel_jax.config import load_config_file
from bigmodel_jax.experiments import sweeps

CONFIGS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {  # the config and the student's overrides (about half the parameters)
    "resnet": ("digits.py:resnet", {"widths": (22, 45, 90)}),
    "cnn": ("mnist1d.py:cnn", {"channels": (17, 17, 17)}),
    "lm": ("pycode.py:transformer", {"dim": 88, "mlp_dim": 352}),
}
ROWS = ("float", "qat8", "qat4", "prune50", "prune80", "prune90", "student", "distill", "lora")
LORA = {  # which layers get adapters, and the fine-tune's length
    "resnet": dict(modules="conv", steps=200),
    "cnn": dict(modules="conv", steps=1000),
    "lm": dict(modules="attention", steps=400),
}
ROOT = "runs/paper_compression"


def float_workdir(model: str, seed: int, root: str = ROOT) -> str:
  return os.path.join(root, f"arg={model}_float,seed={seed}")


def get_config(arg: str = "resnet_float"):
  model, _, row = arg.partition("_")
  if model not in MODELS or row not in ROWS:
    raise ValueError(f"unknown variant '{arg}'; known: MODEL_ROW, MODEL one of "
                     f"{', '.join(MODELS)}, ROW one of {', '.join(ROWS)}")
  spec, student = MODELS[model]
  c = load_config_file(os.path.join(CONFIGS, spec))
  c.label = arg
  if row.startswith("qat"):
    c.quantization.weight_bits = int(row[3:])
  elif row.startswith("prune"):
    c.pruning.sparsity = int(row[5:]) / 100
  elif row in ("student", "distill"):
    c.model.update(student)
    if row == "distill":
      c.distill.teacher = float_workdir(model, 0)
  elif row == "lora":
    c.init_from = float_workdir(model, 0)
    c.lora.rank, c.lora.modules = 4, LORA[model]["modules"]
    c.total_epochs = None
    c.total_steps = LORA[model]["steps"]
    c.schedule.warmup_steps = min(c.schedule.warmup_steps, c.total_steps // 10)
  c.checkpoint_every = c.eval_every = 10**6  # the last step evaluates and saves
  return c


def get_sweep(arg: str = ""):
  options = dict(part.partition("=")[::2] for part in arg.split(",") if part)
  models = [m for m in MODELS if m in options] or (["lm"] if "lm" in options else ["resnet", "cnn"])
  seeds = list(range(int(options.get("seeds", 1 if models == ["lm"] else 3))))
  root = options.get("root", ROOT)
  points = []
  for model in models:  # the float rows first: the distill and lora rows read them
    points += sweeps.product({"arg": [f"{model}_float"], "seed": seeds})
  for model in models:  # then the cheaper rows first
    points += [{"arg": f"{model}_lora", "seed": s, "init_from": float_workdir(model, s, root)}
               for s in seeds]
    points += [{"arg": f"{model}_distill", "seed": s,
                "distill.teacher": float_workdir(model, s, root)} for s in seeds]
    points += sweeps.product({"arg": [f"{model}_{r}" for r in ("student", "qat8", "qat4",
                                                              "prune80", "prune50", "prune90")],
                             "seed": seeds})
  return points
