"""Turns the runs under a directory into paper-style tables and plots.

  python -m bigmodel_jax.report DIR [--metrics=eval/accuracy,eval/loss] [--out=DIR]
      [--power_law=num_params:eval/loss]

Every workdir under DIR (a folder holding config.json) is a run. Runs whose configs differ only
in the seed form a group; the keys that differ between groups are the swept hyperparameters.
Writes DIR/report.md, report.csv and report.tex (final metrics per group, mean +- std over
seeds, the number of finished seeds), curves_METRIC.png (learning curves per group, mean over
seeds), METRIC_vs_KEY.png (a metric against each swept numeric hyperparameter) and, with
--power_law=X:Y, power_law.png (Y against X on log-log axes with a fitted Y = a X^b). Runs
without results.json are still going (or failed): listed with their last logged step, left out
of the statistics, so the report can be made while a sweep runs. The work:
experiments/reports.py.
"""

from bigmodel_jax.cli import ArgumentParser, run_script
from bigmodel_jax.experiments import reports


def main(argv: list[str]) -> None:
  p = ArgumentParser(prog="python -m bigmodel_jax.report")
  p.add_argument("root")
  p.add_argument("--metrics", default="", help="comma-separated; default: every eval/ metric")
  p.add_argument("--out", default="", help="where the files go; default: ROOT")
  p.add_argument("--power_law", default="", help="X:Y, e.g. num_params:eval/loss")
  args = p.parse_args(argv)
  out = args.out or args.root
  text, plots = reports.write(args.root, [m for m in args.metrics.split(",") if m], out,
                              args.power_law, "python -m bigmodel_jax.report " + " ".join(argv))
  print(text)
  print(f"wrote report.md, report.csv, report.tex and {plots} plots to {out}")


def run() -> None:
  run_script(main)


if __name__ == "__main__":
  run()
