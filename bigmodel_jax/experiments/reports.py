"""Paper-style tables and plots of the runs under a directory (`python -m bigmodel_jax.report`,
whose docstring says what is written).

Every workdir under the root (a folder holding config.json, read by runs/load.py over the
current defaults) is a run. Runs whose configs differ only in the seed form a group; the keys
that differ between groups are the swept hyperparameters. Runs without results.json are still
going (or failed): listed with their last logged step, left out of the statistics.
"""

import csv
import io
import json
import math
import os
import re
from typing import Any

import numpy as np

from bigmodel_jax import storage
from bigmodel_jax.config import flatten, to_dict
from bigmodel_jax.faults import ConfigError
from bigmodel_jax.runs import load

IGNORED = {"seed", "log_every", "eval_every", "checkpoint_every", "checkpoint_keep",
           "data.data_dir", "nan_policy"}  # not hyperparameters of the result


def find_runs(root: str) -> list[dict[str, Any]]:
  runs = []
  for path, dirs, files in storage.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in ("checkpoints", "corrupt_checkpoints",
                                                   "tensorboard", "submitit"))
    if "config.json" not in files:
      continue
    dirs[:] = []  # a workdir holds no other runs
    config = flatten(to_dict(load.read_config(path)))
    results = None
    if "results.json" in files:
      results = json.loads(storage.read_text(storage.join(path, "results.json")))
    rows = []
    if "metrics.jsonl" in files:
      for line in storage.read_text(storage.join(path, "metrics.jsonl")).splitlines():
        try:
          rows.append(json.loads(line))
        except ValueError:
          pass  # a line being written
    name = path[len(storage.absolute(root)):].strip("/") if storage.is_remote(root) else (
        os.path.relpath(path, root))
    runs.append({"name": name or ".", "config": config, "results": results, "rows": rows})
  return runs


def swept_keys(runs: list[dict[str, Any]]) -> list[str]:
  """Keys that differ between runs, seed aside. Where runs carry labels (config.label), the
  label stands for everything it determines: only keys varying under one label are added."""
  def varying(rs: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for r in rs for k in r["config"]} - IGNORED)
    return [k for k in keys if len({json.dumps(r["config"].get(k)) for r in rs}) > 1]
  keys = varying(runs)
  if "label" not in keys:
    return keys
  by_label: dict[str, list[dict[str, Any]]] = {}
  for r in runs:
    by_label.setdefault(r["config"].get("label", ""), []).append(r)
  within = sorted({k for rs in by_label.values() for k in varying(rs)})
  return ["label", *within]


def groups(runs: list[dict[str, Any]], keys: list[str]) -> dict[tuple, list[dict[str, Any]]]:
  out: dict[tuple, list[dict[str, Any]]] = {}
  for r in runs:
    out.setdefault(tuple(json.dumps(r["config"].get(k)) for k in keys), []).append(r)
  return dict(sorted(out.items(), key=lambda kv: [_sort_key(json.loads(v)) for v in kv[0]]))


def _sort_key(v: Any) -> tuple:
  """Numbers by value, text naturally (d32 before d128)."""
  if isinstance(v, (int, float)) and not isinstance(v, bool):
    return (0, v, ())
  return (1, 0, tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                      for t in re.split(r"(\d+)", str(v)) if t))


def mean_std(values: list[float]) -> tuple[float, float]:
  a = np.asarray([v for v in values if v is not None], np.float64)
  if not a.size:
    return math.nan, math.nan
  return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarize(runs: list[dict[str, Any]], metrics: list[str] | None) -> dict[str, Any]:
  finished = [r for r in runs if r["results"] is not None]
  keys = swept_keys(runs)
  if metrics is None:
    metrics = sorted({k for r in finished for k in r["results"] if k.startswith("eval/")})
  table = []
  for values, members in groups(runs, keys).items():
    done = [r for r in members if r["results"] is not None]
    row = {"hyper": dict(zip(keys, (json.loads(v) for v in values))), "n": len(done),
           "runs": len(members)}
    for m in [*metrics, "num_params", "wall_time_s"]:
      row[m] = mean_std([r["results"].get(m) for r in done])
    table.append(row)
  running = [(r["name"], r["rows"][-1]["step"] if r["rows"] else 0, r["config"].get("total_steps"))
             for r in runs if r["results"] is None]
  return {"keys": keys, "metrics": metrics, "table": table, "running": running,
          "finished": len(finished), "total": len(runs)}


def _fmt(m: tuple[float, float], digits: int = 4) -> str:
  mean, std = m
  return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _value(v: Any) -> str:
  return f"{v:g}" if isinstance(v, float) else str(v)


def markdown(s: dict[str, Any], command: str) -> str:
  head = [*s["keys"], "seeds", *s["metrics"], "params", "wall time (s)"]
  lines = [f"# Report: {s['finished']} of {s['total']} runs finished", "",
           f"Made by `{command}`. Mean ± standard deviation over seeds.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for row in s["table"]:
    cells = [_value(row["hyper"][k]) for k in s["keys"]] + [f"{row['n']}/{row['runs']}"]
    cells += [_fmt(row[m]) for m in s["metrics"]]
    params = row["num_params"][0]
    cells += ["-" if math.isnan(params) else f"{params:,.0f}", _fmt(row["wall_time_s"], 0)]
    lines.append("| " + " | ".join(cells) + " |")
  if s["running"]:
    lines += ["", "Not finished (left out above):", ""]
    lines += [f"- {name}: step {step} of {total}" for name, step, total in s["running"]]
  return "\n".join(lines) + "\n"


def latex(s: dict[str, Any]) -> str:
  def esc(t: str) -> str:
    return t.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
  cols = [*s["keys"], "seeds", *s["metrics"]]
  out = [r"\begin{tabular}{" + "l" * len(s["keys"]) + "r" * (len(cols) - len(s["keys"])) + "}",
         r"\toprule", " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
  for row in s["table"]:
    cells = [esc(_value(row["hyper"][k])) for k in s["keys"]] + [str(row["n"])]
    cells += ["--" if math.isnan(row[m][0]) else f"${row[m][0]:.4f} \\pm {row[m][1]:.4f}$"
              for m in s["metrics"]]
    out.append(" & ".join(cells) + r" \\")
  out += [r"\bottomrule", r"\end{tabular}"]
  return "\n".join(out) + "\n"


def write_csv(s: dict[str, Any], path: str) -> None:
  f = io.StringIO(newline="")
  w = csv.writer(f)
  w.writerow([*s["keys"], "seeds", "runs",
              *(f"{m}_{x}" for m in [*s["metrics"], "num_params", "wall_time_s"]
                for x in ("mean", "std"))])
  for row in s["table"]:
    w.writerow([*(json.dumps(row["hyper"][k]) if isinstance(row["hyper"][k], list)
                  else row["hyper"][k] for k in s["keys"]), row["n"], row["runs"],
                *(x for m in [*s["metrics"], "num_params", "wall_time_s"] for x in row[m])])
  storage.write(path, f.getvalue())


def _label(keys: list[str], hyper: dict[str, Any]) -> str:
  return ", ".join(f"{k.rpartition('.')[2]}={_value(hyper[k])}" for k in keys) or "all runs"


def _pyplot() -> Any:
  import matplotlib
  matplotlib.use("Agg")  # files only, no display
  import matplotlib.pyplot as plt
  import matplotlib.ticker  # noqa: F401 (plt.matplotlib.ticker below)
  return plt


def _save(fig: Any, ax: Any, path: str, xlabel: str, ylabel: str, legend: bool) -> str:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if legend:
    ax.legend(fontsize=7)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, dpi=120, format="png")
  storage.write(path, png.getvalue())
  return path


def plot(runs: list[dict[str, Any]], s: dict[str, Any], out: str) -> list[str]:
  plt = _pyplot()
  written = []
  grouped = list(groups(runs, s["keys"]).items())
  curve_metrics = sorted({k for r in runs for row in r["rows"] for k in row
                          if k in ("train/loss", "eval/loss", "eval/accuracy")})
  for metric in curve_metrics:
    fig, ax = plt.subplots(figsize=(6, 4))
    for values, members in grouped:
      by_step: dict[int, list[float]] = {}
      for r in members:
        for row in r["rows"]:
          if row.get(metric) is not None:
            by_step.setdefault(row["step"], []).append(row[metric])
      if by_step:
        steps = sorted(by_step)
        ax.plot(steps, [np.mean(by_step[t]) for t in steps],
                label=_label(s["keys"], dict(zip(s["keys"], map(json.loads, values)))))
    written.append(_save(fig, ax, storage.join(out, f"curves_{metric.replace('/', '_')}.png"),
                         "step", metric, len(grouped) <= 12))
    plt.close(fig)
  for key in s["keys"]:
    xs = [row["hyper"][key] for row in s["table"]]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
      continue
    others = [k for k in s["keys"] if k != key]
    for metric in s["metrics"]:
      fig, ax = plt.subplots(figsize=(5, 4))
      series: dict[str, list] = {}
      for row in s["table"]:
        if row["n"]:
          series.setdefault(_label(others, row["hyper"]), []).append(
              (row["hyper"][key], *row[metric]))
      for label, pts in series.items():
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts],
                    marker="o", capsize=3, label=label)
      if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
      written.append(_save(fig, ax, storage.join(out, f"{metric.replace('/', '_')}_vs_{key}.png"),
                           key, metric, 1 < len(series) <= 12))
      plt.close(fig)
  return written


def power_law(s: dict[str, Any], x_key: str, y_key: str, out: str) -> dict[str, float]:
  """Fits y = a * x^b by least squares in log-log space over the groups' means; plots it."""
  plt = _pyplot()

  pts = [(row[x_key][0], row[y_key][0]) for row in s["table"]
         if x_key in row and y_key in row and row["n"]]
  pts = [(x, y) for x, y in pts if x > 0 and y > 0]
  if len(pts) < 2:
    raise ConfigError(f"--power_law: fewer than 2 finished groups with {x_key} and {y_key}")
  lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
  b, log_a = np.polyfit(lx, ly, 1)
  fit = {"a": float(np.exp(log_a)), "b": float(b),
         "r2": float(1 - np.sum((ly - (log_a + b * lx)) ** 2) / max(np.sum((ly - ly.mean()) ** 2),
                                                                    1e-30))}
  fig, ax = plt.subplots(figsize=(5, 4))
  ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o", label="runs (mean over seeds)")
  grid = np.geomspace(min(p[0] for p in pts), max(p[0] for p in pts), 50)
  ax.loglog(grid, fit["a"] * grid ** fit["b"], "-",
            label=f"{y_key} = {fit['a']:.3g} · N^{fit['b']:.3f} (R²={fit['r2']:.3f})")
  ax.yaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
  ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.FormatStrFormatter("%.2g"))
  _save(fig, ax, storage.join(out, "power_law.png"), x_key, y_key, True)
  plt.close(fig)
  return fit


def write(root: str, metrics: list[str], out: str, power_law_spec: str,
          command: str) -> tuple[str, int]:
  """report.md, report.csv, report.tex and the plots of the runs under `root` into `out`
  (`metrics`: the eval metrics to tabulate, [] every one; `power_law_spec` "X:Y" adds the fit
  of Y = a X^b); the markdown and the number of plots. Nothing is written for a root without
  runs or a metric no run logged."""
  storage.check_bucket(root, "ROOT")
  storage.check_bucket(out, "--out")
  if not storage.isdir(root):
    raise ConfigError(f"{root} is not a directory")
  runs = find_runs(root)
  if not runs:
    raise ConfigError(f"no runs (folders with config.json) under {root}")
  logged = {k for r in runs
            for k in [*(r["results"] or {}), *(k for row in r["rows"] for k in row)]}
  unknown = [m for m in metrics if m not in logged]
  if unknown:
    raise ConfigError(f"--metrics: no run under {root} logged {', '.join(unknown)}; its "
                      f"metrics: {', '.join(sorted(k for k in logged if '/' in k))}")
  storage.makedirs(out)
  s = summarize(runs, metrics or None)
  text = markdown(s, command)
  if power_law_spec:
    x_key, _, y_key = power_law_spec.partition(":")
    fit = power_law(s, x_key, y_key, out)
    text += (f"\nPower law over the groups: {y_key} = {fit['a']:.4g} · {x_key}^{fit['b']:.4f} "
             f"(R² {fit['r2']:.4f}); power_law.png\n")
  storage.write(storage.join(out, "report.md"), text)
  storage.write(storage.join(out, "report.tex"), latex(s))
  write_csv(s, storage.join(out, "report.csv"))
  return text, len(plot(runs, s, out))
