"""A run's files (layout: WORKSPACE.md).

  workdir.py     the checks before anything is written, the workdir's creation, atomic JSON
                 files, directories written whole or not at all
  checkpoint.py  Orbax checkpoints of the train state with the data position and a digest
  load.py        the one loader: a workdir's config (over the current defaults) and its newest
                 parameters in eval form, for every command, the judge, the teacher, init_from
"""
