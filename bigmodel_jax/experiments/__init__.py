"""Many runs at once: sweeps of a config's points over launchers (sweeps.py, python -m
bigmodel_jax.sweep; config files build their points with sweeps.product and friends) and
paper-style tables and plots of their results (reports.py, python -m bigmodel_jax.report)."""
