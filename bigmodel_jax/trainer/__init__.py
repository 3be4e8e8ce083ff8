"""The trainer: train_and_evaluate and what it composes, and the parallelism it runs with.

  train.py       train_and_evaluate(config, workdir): checks, input, build, state, the loop
                 (log, evaluate, checkpoint, preemption), results; warm starts, the sample judge
  build.py       what train, planning and the benchmarks build from a config: mesh plan, model,
                 objective (a distillation teacher resolved here), optimizer, step options
  runners.py     one runner per execution path: jit (K updates per call), data on device, pmap
  steps.py       the pure train and eval steps of any objective
  state.py       the TrainState and its creation, sharded in place
  evaluation.py  the eval split(s), and a generative objective's samples scored and drawn
  judge.py       the classifier that scores samples (accuracy, Frechet distance)
  grids.py       samples drawn as one PNG grid
  optim.py       optax optimizers and schedules, per network; frozen parameters
  profiling.py   --profile_steps: a jax.profiler trace of a window of updates
  flops.py       FLOPs with every scanned layer, time step and micro-batch counted
  planning.py    summary (parameters, FLOPs) and --dry_run (memory per device) without data
  sharding.py    the device mesh, the presets (dp, fsdp, tp, fsdp_tp, ep, fsdp_ep), logical rules
  pmap.py        the classic data-parallel strategy (parallel.strategy=pmap)
"""
