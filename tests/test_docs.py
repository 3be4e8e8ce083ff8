"""Every command that README.md, GUIDE.md, WORKSPACE.md and the configs' docstrings print runs as
written: each flag is one the command defines, each config file and its overrides parse and
pass the config checks, and each sweep's points do too. What no static check can see (a sample longer
than the model's context) the README's fine-tune recipe shows by running whole, with tiny step
counts (tests/test_text.py)."""

import ast
import glob
import importlib.util
import os
import re

from helpers import REPO, documented_commands

from bigmodel_jax import sweep
from bigmodel_jax.cli import parse_config
from bigmodel_jax.config import check_values
from bigmodel_jax.experiments import sweeps
from bigmodel_jax.faults import ConfigError

TEMPLATE = ("[", "...", "NAME", "CONFIG", "|")  # usage lines: placeholders for the reader
ABSL = {"verbosity", "v", "helpfull", "help", "helpshort", "logtostderr", "alsologtostderr"}


def _docs() -> dict[str, str]:
  docs = {name: open(os.path.join(REPO, name)).read()
          for name in ("README.md", "GUIDE.md", "WORKSPACE.md")}
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True)):
    docs[os.path.relpath(path, REPO)] = ast.get_docstring(ast.parse(open(path).read())) or ""
  return docs


def _defined_flags(module: str) -> set[str]:
  """The flags a command module defines (absl DEFINE_*, argparse add_argument)."""
  source = open(importlib.util.find_spec(module).origin).read()
  return (set(re.findall(r'DEFINE_\w+\(\s*"(\w+)"', source)) |
          set(re.findall(r'add_argument\(\s*"--(\w+)"', source)) | ABSL)


def _problems(module: str, args: list[str], tmp_path) -> list[str]:
  out = []
  defined = _defined_flags(module)
  for a in args:
    name = a[2:].split("=", 1)[0]
    if a.startswith("--") and not name.startswith("config") and not (
        name in defined or name.startswith("no") and name[2:] in defined):
      out.append(f"{module} has no flag --{name}")
  spec = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
  try:
    if module == "bigmodel_jax.sweep":  # every point's config, as the sweep checks them
      parsed, extra = sweep.parse([a if not a.startswith("--root=") else f"--root={tmp_path}/r"
                                   for a in args])
      sweeps.jobs(parsed.config, parsed.root, extra)
    elif spec is not None:
      check_values(parse_config(spec, [a for a in args if a.startswith("--config.")]))
  except ConfigError as e:
    out.append(f"{module}: {e}")
  return out


def test_every_documented_command_parses_and_its_config_checks(tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)  # the commands name configs/... from the repository's root
  problems, checked = [], 0
  for doc, text in _docs().items():
    for module, *args in documented_commands(text):
      if any(marker in a for a in args for marker in TEMPLATE):
        continue
      checked += 1
      problems += [f"{doc}: {p}  [{' '.join(args)}]" for p in _problems(module, args, tmp_path)]
  assert not problems, "\n".join(problems)
  assert checked >= 90  # README, GUIDE.md, WORKSPACE.md and every config file's docstring read
