"""train_and_evaluate(config, workdir): the one training loop every objective and model goes
through.

Read it top to bottom: checks, input, build (mesh plan, model, objective, optimizer: build.py),
sharded state, runner (runners.py: jit, K steps per call, on-device data, pmap) and evaluation
(evaluation.py), workdir, restore, loop (log, eval, checkpoint), results. Nothing is written to
the workdir until every check has passed.
"""

import json
import math
import os
import shutil
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bigmodel_jax import config as config_lib
from bigmodel_jax import faults, metrics, storage, writers
from bigmodel_jax.compression import prune, qwix_wrap
from bigmodel_jax.data import lm, pipeline, tasks
from bigmodel_jax.pretrained import architecture
from bigmodel_jax.runs import checkpoint
from bigmodel_jax.runs import load, workdir as workdir_lib
from bigmodel_jax.trainer import build as build_lib
from bigmodel_jax.trainer import evaluation, judge, optim, profiling, runners
from bigmodel_jax.trainer import state as state_lib


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False, profile_steps: str = ""
                       ) -> dict[str, Any]:
  """profile_steps "A:B": a jax.profiler trace of updates A to B in WORKDIR/profile."""
  t_start = time.time()
  config_lib.check_values(config)
  config, taken = architecture.of_init_from(config)  # a converted checkpoint's model options
  profile = profiling.Window.parse(profile_steps, workdir)
  workdir_lib.check(workdir, config, allow_config_change)

  # --- Input: TFDS sources (one data set, or a mixture of tasks), a checkpointable Grain
  # iterator over this process's shard. ---
  sources = tasks.load(config)
  total_steps = config_lib.total_steps(config, len(sources.train))
  train_iter = pipeline.train_iterator(sources.train, config.batch_size, config.seed,
                                       config.data.workers)

  # --- Build: mesh plan, model, objective, optimizer, schedule (shared with planning.py). ---
  built = build_lib.build(config, build_lib.example_of(sources.train), sources.num_outputs,
                      total_steps)

  # --- Sharded state: parameters and optimizer state created in place on the mesh. ---
  if config.lora.rank:  # the adapters' shapes, checked before anything is allocated
    qwix_wrap.check_adapters(built.planned_state().params, config.lora)
  state, state_shardings = built.create_state(config.seed)
  forward_flops = built.forward_flops({"params": state.params, **state.model_state})
  n_params = state_lib.num_params(state.params)
  fresh: list[str] = []  # warm start: parameters that did not fit and start from scratch
  if not checkpoint.saved_steps(workdir):  # a workdir's own checkpoint wins
    state, fresh = _warm_start(config, built.objective, state, state_shardings)
  frozen = optim.frozen_paths(state.params, optim.freeze_regex(config))

  # --- Execution path (compiled steps, the state donated: updated in place) and evaluation. ---
  runner = runners.make(config, built, state_shardings, train_iter, sources.train, total_steps)
  evaluate = evaluation.Evaluator(config, built, state_shardings, sources, workdir,
                                  _sample_judge(config) if built.objective.can_sample else "")

  # --- Workdir: every check passed; from here on files are written. ---
  workdir_lib.create(workdir)
  resolved = config_lib.to_dict(config)
  workdir_lib.write_json(storage.join(workdir, "config.json"), resolved)
  workdir_lib.keep_tokenizer(workdir, sources.tokenizer_path)
  writer = writers.Writers(config.writers, workdir, resolved, active=jax.process_index() == 0)
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_keep)
  metrics.console(_run_line(config, built, sources, n_params, total_steps))
  if hasattr(sources.train, "describe"):  # a mixture of corpora: shares, and what repeats
    metrics.console(sources.train.describe(total_steps * config.batch_size))

  # --- Restore: the newest good checkpoint (state and data position), else a fresh start. ---
  restored = ckpt.restore_latest(state_lib.abstract(state_shardings, state), train_iter)
  state, start_step = restored if restored is not None else (state, 0)
  for line in _start_lines(config, workdir, None if restored is None else start_step, taken, fresh,
                           frozen):
    metrics.console(line)
  writer.resume_at(start_step)

  # --- Loop (_train): one call per batch or per K batches; log, evaluate and checkpoint. ---
  guard = _Guard(config.nan_policy, ckpt)
  try:
    state, eval_metrics, timer = _train(config, runner, evaluate, guard, ckpt, writer,
                                        runner.to_loop(state), start_step, total_steps, profile,
                                        getattr(sources.train, "epochs", None))
  except faults.RunStopped:  # a failed write (a writer's): a save in flight is a good one
    ckpt.wait()
    raise
  finally:
    train_iter.close()  # its worker processes, if any

  # --- Results. ---
  state = runner.canonical(state)
  if not eval_metrics:  # resumed a finished run: evaluate the final state again
    eval_metrics = evaluate(state, total_steps)
    guard.check_eval(total_steps, eval_metrics)
  results = _results(config, state, {"step": total_steps, **eval_metrics, "num_params": n_params},
                     frozen, forward_flops, timer, t_start, start_step, ckpt.waited_s)
  workdir_lib.write_json(storage.join(workdir, "results.json"), results)
  writer.close()
  ckpt.close()
  metrics.console(f"Done: {json.dumps({k: v for k, v in results.items() if k != 'params_sha256'})}")
  return results


def _start_lines(config: ml_collections.ConfigDict, workdir: str, resumed: int | None,
                 taken: list[str], fresh: list[str], frozen: list[str]) -> list[str]:
  """Where the run starts from (its checkpoint at step `resumed`, or a warm start) and what it
  does not train."""
  lines = []
  if resumed is not None:
    lines.append(f"Resumed from the checkpoint at step {resumed} in {workdir}")
  elif config.init_from:
    lines.append(_warm_start_line(config.init_from, taken, fresh))
  if frozen and config.lora.rank:
    lines.append(f"LoRA: {len(frozen)} base parameters frozen, the adapters trained")
  elif frozen:
    lines.append(f"Frozen (not updated): {', '.join(frozen)}")
  return lines


def _run_line(config: ml_collections.ConfigDict, built: build_lib.Build, sources: Any,
              n_params: int, total_steps: int) -> str:
  """The console's first line: model, objective, data, steps and mesh."""
  data_name = (" + ".join(f"{n} ({cfg.name})" for n, (_, cfg) in tasks.task_configs(config).items())
               if config.tasks else
               " + ".join(f"{n} ({cfg.name})" for n, (_, cfg) in lm.corpus_configs(config.data).items())
               if config.data.kind == "lm" and config.data.corpora else config.data.name)
  length = ("total_steps" if config.total_epochs is None else  # which one counts (cli.py)
            f"total_epochs={config.total_epochs:g}")
  return (f"Model {config.model.name} ({config_lib.objective_name(config)}): "
          f"{n_params:,} parameters; data {data_name}: {len(sources.train):,} train / "
          f"{_count(sources.eval):,} eval examples; {total_steps:,} steps ({length}); "
          f"{config.sharding} over mesh {dict(built.plan.mesh.shape)} on {jax.device_count()} "
          "devices" + _pipeline_note(built.plan.schedule))


def _pipeline_note(s: Any) -> str:
  if s is None:
    return ""
  kind = {"gpipe": "GPipe", "1f1b": "1F1B"}.get(s.kind, f"circular, {s.repeats} repeats")
  share = "2(P-1)/(M+2P-2)" if s.kind == "1f1b" else "(P-1)/(M*R+P-1)"
  return (f"; pipeline of {s.stages} stages ({kind}) x {s.microbatches} microbatches: bubble "
          f"{share} = {s.bubble:.1%} of each step")


def _train(config: ml_collections.ConfigDict, runner: runners.JitRunner, evaluate: Any,
           guard: "_Guard", ckpt: checkpoint.Checkpointer, writer: writers.Writers,
           state: Any, start_step: int, total_steps: int,
           profile: "profiling.Window", epochs: Any = None
           ) -> tuple[Any, dict[str, float], Any]:
  """The loop: one call per batch (steps_per_call > 1: per K batches); log, evaluate and
  checkpoint on their cadences, which fall between calls (epochs(rows): a mixture's epochs per
  corpus, logged). The next call's input is read and
  placed while a call runs (dispatch is asynchronous); a checkpoint saves the data position
  taken before that read. SIGTERM/SIGINT saves and ends the run after the current call."""
  progress = metrics.Progress(total_steps, start_step)
  pending = metrics.MetricBuffer()  # step metrics since the last log
  timer = metrics.RateTimer()
  eval_metrics: dict[str, float] = {}
  waited = 0.0  # ckpt.waited_s at the last log line
  with faults.StopSignals(multi_process=jax.process_count() > 1) as signals:
    done = start_step
    batch = runner.next_batch(done) if done < total_steps else None
    while done < total_steps:
      k = runner.call_size(done)
      step = done + k  # updates done after this call
      last = step == total_steps
      stop = signals.requested(step)
      saves = step % config.checkpoint_every == 0 or last or stop
      position = runner.position(step) if saves else None  # the data position after this call
      try:
        profile.before(done + 1, step)
        with profile.annotate(step):
          state, step_metrics = runner.call(state, batch, k)
        profile.after(step, state)
        if not (last or stop):
          batch = runner.next_batch(step)
      except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
          raise
        raise faults.PeerLost(f"step {step} failed, another process is probably gone: "
                              f"{faults.os_error_text(e)}") from e
      pending.add(done + 1, k, step_metrics)
      guard.add(done + 1, k, step_metrics)
      if timer.t_first is None:  # compile the metrics' stacking before timing starts
        pending.warm_up(step_metrics, config.log_every // config.steps_per_call)
        guard.warm_up(step_metrics, config.log_every // config.steps_per_call)
        runner.take_waited()  # input waits count from the end of the first call
      timer.called(k)
      row = {}  # one metrics.jsonl line per step that logs or evaluates
      if step % config.log_every == 0 or last:
        guard.check_updates()
        row = _train_row(config, pending, timer, runner, ckpt.waited_s - waited)
        waited = ckpt.waited_s
        if epochs is not None:
          row.update(epochs(step * config.batch_size))
      with timer.pause():  # evaluation and checkpointing do not count in train/steps_per_sec
        evaluates = step % config.eval_every == 0 or last
        if evaluates:
          eval_metrics = evaluate(runner.canonical(state), step)
          row.update(eval_metrics)
        if row:
          writer.write(step, row)
          progress.log(step, row)
        if evaluates:
          guard.check_eval(step, eval_metrics)
        if saves:
          guard.check_updates()
          writer.flush()  # metrics.jsonl in a bucket: every line up to this checkpoint kept
          ckpt.save(step, runner.canonical(state), position)
      if stop and not last:
        ckpt.wait()
        writer.close()
        raise faults.Preempted(f"{signals.received} at step {step}: saved the checkpoint of step "
                               f"{step} in {ckpt.dir}; rerun the same command to resume")
      progress.update(step)
      done = step
  timer.stop()
  profile.close()
  ckpt.wait()
  return state, eval_metrics, timer


def _train_row(config: ml_collections.ConfigDict, pending: metrics.MetricBuffer,
               timer: metrics.RateTimer, runner: runners.JitRunner, checkpoint_wait_s: float
               ) -> dict[str, float]:
  """A log step's train/ columns: the interval's means, its steps/s, the share of it this
  process sat blocked on the input pipeline, and the seconds blocked on checkpoint saves."""
  row = metrics.train_row(pending.fetch()[1], config.nan_policy)
  rate = timer.interval_rate()
  if rate is not None:
    row["train/steps_per_sec"] = rate
    row["train/input_wait_fraction"] = min(1.0, runner.take_waited() / timer.interval_s)
  row["train/checkpoint_wait_s"] = checkpoint_wait_s
  return row


class _Guard:
  """Faults (faults.py): a non-finite update is never applied (steps.py); with nan_policy=stop
  the run ends at the next log or checkpoint, before anything after it is saved. A non-finite
  evaluation ends it with any policy."""

  def __init__(self, nan_policy: str, ckpt: checkpoint.Checkpointer):
    self.nan_policy, self.ckpt = nan_policy, ckpt
    self.unchecked = metrics.MetricBuffer()  # "finite" since the last check

  def add(self, first_step: int, count: int, step_metrics: dict[str, Any]) -> None:
    self.unchecked.add(first_step, count, {"finite": step_metrics["finite"]})

  def warm_up(self, step_metrics: dict[str, Any], calls: int) -> None:
    self.unchecked.warm_up({"finite": step_metrics["finite"]}, calls)

  def last_good(self) -> str:
    self.ckpt.wait()
    last = self.ckpt.latest_step()
    return (f"the last good checkpoint is step {last} in {self.ckpt.dir}" if last is not None
            else "no checkpoint was written")

  def check_updates(self) -> None:
    if not self.unchecked:
      return
    numbers, fetched = self.unchecked.fetch()
    bad = next((s for s, ok in zip(numbers, fetched["finite"]) if not ok), None)
    if bad is not None and self.nan_policy == "stop":
      raise faults.NonFinite(f"non-finite loss, gradients or update at step {bad}; stopped "
                             f"before applying it; {self.last_good()}; lower the learning rate, "
                             "or set --config.nan_policy=skip to skip such updates and count them")

  def check_eval(self, step: int, evaluated: dict[str, float]) -> None:
    # With any nan_policy: finite updates can still grow parameters whose outputs overflow; the
    # run is then broken, and must not end as a success (nor save this step's checkpoint).
    bad = [k for k, v in evaluated.items() if not math.isfinite(v)]
    if bad:
      raise faults.NonFinite(f"evaluation at step {step} is not finite ({', '.join(bad)}): the "
                             f"model's outputs overflow; {self.last_good()}; lower the learning "
                             "rate")


def _results(config: ml_collections.ConfigDict, state: Any, first: dict[str, Any],
             frozen: list[str], forward_flops: Any, timer: metrics.RateTimer,
             t_start: float, start_step: int, checkpoint_wait_s: float) -> dict[str, Any]:
  """results.json: `first` (step, eval metrics, num_params), trainable_params (all but the
  frozen ones: LoRA's base, config.freeze), sparsity (pruned runs, measured on the final
  parameters), then cost and provenance."""
  out = {**first, "trainable_params": optim.trainable_count(state.params, frozen)}
  if config.pruning.sparsity or config.pruning.n_m:
    out["sparsity"] = prune.sparsity(state.params, config.pruning.dense)
  out.update({
      "flops_per_example": forward_flops,  # forward pass, XLA cost analysis, every layer
      "wall_time_s": round(time.time() - t_start, 3),
      "steps_per_sec": timer.rate(first["step"] - start_step),
      # from the start of train_and_evaluate: data, model, state, compilation and the step
      "time_to_first_step_s": (round(timer.t_first - t_start, 3) if timer.t_first is not None
                               else None),
      "start_step": start_step,
      # blocked on checkpoint saves (async: the state's copy off the devices, a save in flight)
      "checkpoint_wait_s": round(checkpoint_wait_s, 3),
      "nonfinite_updates": int(jax.device_get(state.nonfinite_updates)),
      "params_sha256": state_lib.params_digest(state.params),
  })
  return {k: writers.json_value(v) for k, v in out.items()}


def _sample_judge(config: ml_collections.ConfigDict) -> str:
  """The workdir of the classifier that scores the samples (judge.py): samples.judge, or the
  data set's pinned one, trained here (a run of its own) on first use."""
  judge.check(config)
  if config.samples.judge:
    return config.samples.judge
  pinned, workdir = judge.pinned_workdir(config)
  if storage.isfile(storage.join(workdir, "results.json")):
    return workdir
  if jax.process_count() > 1:
    raise faults.ConfigError(f"the sample judge {workdir} is not trained yet: train it in one "
                             "process first (any single-process run of this config does), or "
                             "set samples.judge")
  metrics.console(f"Training the sample judge for {config.data.name} (first use) into {workdir}")
  os.makedirs(os.path.dirname(workdir), exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".training-", dir=os.path.dirname(workdir))
  train_and_evaluate(pinned, tmp)
  try:
    os.rename(tmp, workdir)  # atomic: a concurrent run may have finished first
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
  return workdir


def _warm_start(config: ml_collections.ConfigDict, objective: Any, state: Any,
                state_shardings: Any) -> tuple[Any, list[str]]:
  """The objective's preset collections (a distillation teacher's variables) over their
  initial values; the parameters of config.init_from's newest checkpoint (runs/load.py) that
  fit this model by path and shape (in the group config.init_into, if set), the others keeping
  their fresh values and named. The optimizer state starts fresh either way."""
  preset = objective.preset_state
  state = state.replace(model_state={**state.model_state, **jax.device_put(
      preset, {name: state_shardings.model_state[name] for name in preset})})
  if not config.init_from:
    return state, []
  into = config.init_into
  if into and into not in state.params:
    raise faults.ConfigError(f"init_into='{into}': the model has no parameter group '{into}'; "
                             f"its groups: {', '.join(state.params)}")
  ours, shardings = ((state.params[into], state_shardings.params[into]) if into else
                     (state.params, state_shardings.params))
  try:
    theirs = flatten_dict(load.load(config.init_from).variables["params"], sep="/")
  except faults.ConfigError as e:
    raise faults.ConfigError(f"init_from: {e}") from None
  flat = flatten_dict(ours, sep="/")
  fits = {k for k, v in flat.items() if k in theirs and np.shape(theirs[k]) == v.shape}
  if not fits:
    raise faults.ConfigError(f"init_from {config.init_from}: its parameters do not fit this "
                             f"model ({', '.join(sorted(flat)[:5])} ...)")
  params = jax.device_put(unflatten_dict({k: theirs[k] if k in fits else v
                                          for k, v in flat.items()}, sep="/"), shardings)
  fresh = [f"{into}/{k}" if into else k for k in sorted(set(flat) - fits)]
  return state.replace(params={**state.params, into: params} if into else params), fresh


def _warm_start_line(source: str, taken: list[str], fresh: list[str]) -> str:
  parts = [f"Initialized parameters from {source}"]
  if taken:  # architecture.of_init_from: a converted checkpoint's options
    parts.append(f"its architecture over the config: {', '.join(taken)}")
  if fresh:
    parts.append(f"new (did not fit): {', '.join(fresh)}")
  return "; ".join(parts)


def _count(examples: Any) -> int:
  return sum(map(len, examples.values())) if isinstance(examples, dict) else len(examples)
