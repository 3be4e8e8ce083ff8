"""train_and_evaluate(config, workdir): the one training loop every model family goes through.

Read it top to bottom: checks, mesh, input, model and optimizer, sharded state, compiled steps,
workdir, restore, loop (log, eval, checkpoint), results. Nothing is written to the workdir until
every check has passed.
"""

import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigmodel_jax import checkpoint, faults, metrics, models, optim, pmap, sharding, steps, summary
from bigmodel_jax import config as config_lib
from bigmodel_jax import state as state_lib
from bigmodel_jax import workdir as workdir_lib
from bigmodel_jax.config import ConfigError
from bigmodel_jax.data import on_device, pipeline, tasks


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict[str, Any]:
  t_start = time.time()
  config_lib.check_values(config)
  workdir_lib.check(workdir, config, allow_config_change)

  # --- Mesh: the preset's sizes unless config.mesh sets them; the batch over data (and fsdp). ---
  plan = sharding.Plan(config.sharding, config.sharding_rules, config.mesh.to_dict())
  plan.check_batch_size("batch_size", config.batch_size)
  plan.check_batch_size("eval_batch_size", config.eval_batch_size)
  micro = config.batch_size // config.grad_accum_steps
  if config.batch_size % config.grad_accum_steps or micro % plan.data_parallel_size:
    raise ConfigError(f"batch_size={config.batch_size} / grad_accum_steps={config.grad_accum_steps}"
                      f" must be a whole micro-batch dividing over {plan.data_parallel_size} devices")
  batch_sharding = plan.batch_sharding
  stacked_sharding = jax.sharding.NamedSharding(  # steps_per_call batches: K x B x ...
      plan.mesh, jax.sharding.PartitionSpec(None, plan.batch_axes))

  # --- Input: TFDS sources (one data set, or a mixture of tasks), a checkpointable Grain
  # iterator over this process's shard. ---
  sources = tasks.load(config)
  total_steps = config_lib.total_steps(config, len(sources.train))
  train_iter = pipeline.train_iterator(sources.train, config.batch_size, config.seed)
  example = jax.tree.map(jnp.asarray, sources.train.gather(np.zeros(1, np.int64))["inputs"])
  device_data = None  # data.on_device: the split on the devices, each step samples its batch
  if config.data.on_device:
    if config.parallel.strategy == "pmap":
      raise ConfigError("data.on_device needs parallel.strategy=jit")
    device_data = on_device.DeviceData(sources.train, config.batch_size, config.seed, plan.mesh,
                                       config.steps_per_call)

  # --- Model and optimizer. ---
  model = models.build_for(config, sources.num_outputs)
  schedule = optim.make_schedule(config.schedule, config.optimizer.learning_rate, total_steps)
  tx = optim.freeze(optim.make_optimizer(config.optimizer, schedule), config.freeze)

  # --- Sharded state: parameters and optimizer state created in place on the mesh. ---
  with models.init_errors_as_config_errors(config.model.name, example):
    state, state_shardings = state_lib.create(model, tx, example, config.seed, plan)
    flops = summary.flops_per_example(model, jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), {"params": state.params,
                                                           **state.model_state}), example)
  n_params = state_lib.num_params(state.params)
  fresh: list[str] = []  # warm start: parameters that did not fit and start from scratch
  if config.init_from and not checkpoint.saved_steps(workdir):  # a workdir's own checkpoint wins
    params, fresh = checkpoint.load_params(config.init_from, state_lib.abstract(
        state_shardings.params, state.params), init_params=state.params)
    state = state.replace(params=params)  # the optimizer state starts fresh (zeros) either way
  frozen = optim.frozen_paths(state.params, config.freeze)

  # --- Compiled steps: the state is donated, so the update happens in place. ---
  step_kwargs = steps.step_options(config, model, tx, schedule)
  compute_dtype = step_kwargs["compute_dtype"]
  if config.parallel.strategy == "pmap":
    strategy = pmap.Strategy(state_shardings, **step_kwargs)
  else:
    strategy = None
    sample = (functools.partial(on_device.sample, global_batch=config.batch_size)
              if device_data is not None else None)
    # K = steps_per_call updates per call; single steps only where a run starts or ends off a
    # multiple of K (each compiles on its first use)
    train_steps = {k: steps.jit_train_step(plan, state_shardings, sample=sample,
                                           steps_per_call=k, **step_kwargs)
                   for k in {1, config.steps_per_call}}
  eval_step = jax.jit(functools.partial(steps.eval_step, model=model, compute_dtype=compute_dtype,
                                        exact_match=config.data.kind == "seq2seq"),
                      in_shardings=(state_shardings, batch_sharding))

  def call_size(done: int) -> int:  # updates the call after `done` updates makes
    k = config.steps_per_call
    return k if done % k == 0 and done + k <= total_steps else 1

  def next_batch(done: int) -> Any:  # what the call after `done` updates takes
    if device_data is not None:
      return device_data.inputs(done)
    if strategy is not None:
      return next(train_iter)  # this process's rows
    k = call_size(done)
    if k == 1:
      return sharding.global_batch(next(train_iter), batch_sharding)
    local = jax.tree.map(lambda *b: np.stack(b), *(next(train_iter) for _ in range(k)))
    return sharding.global_batch(local, stacked_sharding)  # k x B x ...

  def run_call(state, batch, k: int):
    if strategy is not None:
      return strategy.step(state, batch)
    with plan.activation_context():
      return train_steps[k](state, batch)

  def canonical(state):  # the mesh-sharded state, as checkpoints and evaluation see it
    return state if strategy is None else strategy.to_global(state)

  def evaluate_split(state: state_lib.TrainState, examples: Any) -> dict[str, float]:
    sums = None
    for batch in pipeline.eval_batches(examples, config.eval_batch_size):
      with plan.activation_context():
        out = eval_step(canonical(state), sharding.global_batch(batch, batch_sharding))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    count = max(float(sums.pop("count")), 1.0)
    out = {f"eval/{k}": float(v) / count for k, v in sums.items()}
    if config.data.kind == "lm":  # byte-level: nats per byte -> bits per byte
      out["eval/bits_per_byte"] = out["eval/loss"] / math.log(2)
    return out

  def evaluate(state: state_lib.TrainState) -> dict[str, float]:
    if not config.tasks:
      return evaluate_split(state, sources.eval)
    # eval/{task}/{metric} per task, and eval/{metric} the mean over tasks
    per_task = {name: evaluate_split(state, ex) for name, ex in sources.eval.items()}
    shared = set.intersection(*(set(m) for m in per_task.values()))
    out = {k: float(np.mean([m[k] for m in per_task.values()])) for k in sorted(shared)}
    out.update({f"eval/{name}/{k[len('eval/'):]}": v for name, m in per_task.items()
                for k, v in m.items()})
    return out

  # --- Workdir: every check passed; from here on files are written. ---
  workdir_lib.create(workdir)
  workdir_lib.write_json(os.path.join(workdir, "config.json"), config_lib.to_dict(config))
  writer = metrics.MetricWriter(workdir)
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_keep)
  data_name = " + ".join(f"{n} ({cfg.name})" for n, (_, cfg) in tasks.task_configs(config).items()
                        ) if config.tasks else config.data.name
  metrics.console(f"Model {config.model.name}: {n_params:,} parameters; data {data_name}: "
                  f"{len(sources.train):,} train / {_count(sources.eval):,} eval examples; "
                  f"{total_steps:,} steps; {config.sharding} over mesh {dict(plan.mesh.shape)} "
                  f"on {jax.device_count()} devices")

  # --- Restore: the newest good checkpoint (state and data position), else a fresh start. ---
  start_step = 0
  restored = ckpt.restore_latest(state_lib.abstract(state_shardings, state), train_iter)
  if restored is not None:
    state, start_step = restored
    metrics.console(f"Resumed from the checkpoint at step {start_step} in {workdir}")
  elif config.init_from:
    metrics.console(f"Initialized parameters from {config.init_from}"
                    + (f"; new (did not fit): {', '.join(fresh)}" if fresh else ""))
  if frozen:
    metrics.console(f"Frozen (not updated): {', '.join(frozen)}")
  writer.truncate_after(start_step)
  if strategy is not None:
    state = strategy.to_local(state)

  # --- Loop: one jitted call per batch (steps_per_call > 1: per K batches); log, evaluate and
  # checkpoint on their cadences, which fall between calls. The next call's input is read and
  # placed while a call runs (dispatch is asynchronous); a checkpoint saves the data position
  # taken before that read.
  # Faults (faults.py): a non-finite update is never applied; nan_policy=stop ends the run at the
  # next log or checkpoint, before anything after it is saved. SIGTERM/SIGINT saves and ends it
  # after the current call.
  progress = metrics.Progress(total_steps, start_step)
  pending = _Pending()  # step metrics since the last log
  unchecked = _Pending()  # "finite" since the last check
  t_first = t_interval = None  # the first call includes compilation; rates are timed after it
  first_steps = timed = 0  # updates in the first call; updates since t_interval
  eval_metrics: dict[str, float] = {}

  def last_good() -> str:
    ckpt.wait()
    last = ckpt.latest_step()
    return (f"the last good checkpoint is step {last} in {ckpt.dir}" if last is not None
            else "no checkpoint was written")

  def stop_if_nonfinite() -> None:
    if not unchecked:
      return
    numbers, fetched = unchecked.fetch()
    bad = next((s for s, ok in zip(numbers, fetched["finite"]) if not ok), None)
    if bad is not None and config.nan_policy == "stop":
      raise faults.NonFinite(f"non-finite loss, gradients or update at step {bad}; stopped "
                             f"before applying it; {last_good()}; lower the learning rate, or set "
                             "--config.nan_policy=skip to skip such updates and count them")

  def stop_if_eval_nonfinite(step: int, evaluated: dict[str, float]) -> None:
    # With any nan_policy: finite updates can still grow parameters whose outputs overflow; the
    # run is then broken, and must not end as a success (nor save this step's checkpoint).
    bad = [k for k, v in evaluated.items() if not math.isfinite(v)]
    if bad:
      raise faults.NonFinite(f"evaluation at step {step} is not finite ({', '.join(bad)}): the "
                             f"model's outputs overflow; {last_good()}; lower the learning rate")

  with faults.StopSignals(multi_process=jax.process_count() > 1) as signals:
    done = start_step
    batch = next_batch(done) if done < total_steps else None
    while done < total_steps:
      k = call_size(done)
      step = done + k  # updates done after this call
      last = step == total_steps
      stop = signals.requested(step)
      saves = step % config.checkpoint_every == 0 or last or stop
      position = None  # the data position after this call's batches
      if saves:
        position = device_data.position(step) if device_data else train_iter.get_state()
      try:
        state, step_metrics = run_call(state, batch, k)
        if not (last or stop):
          batch = next_batch(step)
      except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
          raise
        raise faults.PeerLost(f"step {step} failed, another process is probably gone: "
                              f"{faults.os_error_text(e)}") from e
      pending.add(done + 1, k, step_metrics)
      unchecked.add(done + 1, k, {"finite": step_metrics["finite"]})
      if t_first is None:
        calls = config.log_every // config.steps_per_call  # per log interval
        pending.warm_up(step_metrics, calls)
        unchecked.warm_up({"finite": step_metrics["finite"]}, calls)
        t_first = t_interval = time.time()
        first_steps = k
      else:
        timed += k
      row = {}  # one metrics.jsonl line per step that logs or evaluates
      if step % config.log_every == 0 or last:
        stop_if_nonfinite()
        row = _train_row(pending.fetch()[1], config.nan_policy)
        now = time.time()
        if timed:
          row["train/steps_per_sec"] = timed / (now - t_interval)
        t_interval, timed = now, 0
      t_pause = time.time()  # evaluation and checkpointing do not count in train/steps_per_sec
      evaluates = step % config.eval_every == 0 or last
      if evaluates:
        eval_metrics = evaluate(state)
        row.update(eval_metrics)
      if row:
        writer.write(step, row)
        progress.log(step, row)
      if evaluates:
        stop_if_eval_nonfinite(step, eval_metrics)
      if saves:
        stop_if_nonfinite()
        ckpt.save(step, canonical(state), position)
      if t_interval is not None:
        t_interval += time.time() - t_pause
      if stop and not last:
        ckpt.wait()
        writer.close()
        raise faults.Preempted(f"{signals.received} at step {step}: saved the checkpoint of step "
                               f"{step} in {ckpt.dir}; rerun the same command to resume")
      progress.update(step)
      done = step
  t_end = time.time()
  ckpt.wait()

  # --- Results. ---
  state = canonical(state)
  if not eval_metrics:  # resumed a finished run: evaluate the final state again
    eval_metrics = evaluate(state)
    stop_if_eval_nonfinite(total_steps, eval_metrics)
  trained = total_steps - start_step
  results = {
      "step": total_steps,
      **eval_metrics,
      "num_params": n_params,
      "flops_per_example": flops,  # forward pass, XLA cost analysis
      "wall_time_s": round(time.time() - t_start, 3),
      "steps_per_sec": ((trained - first_steps) / (t_end - t_first)
                        if trained > first_steps else None),
      # from the start of train_and_evaluate: data, model, state, compilation and the step
      "time_to_first_step_s": round(t_first - t_start, 3) if t_first is not None else None,
      "start_step": start_step,
      "nonfinite_updates": int(jax.device_get(state.nonfinite_updates)),
      "params_sha256": state_lib.params_digest(state.params),
  }
  results = {k: metrics.json_value(v) for k, v in results.items()}
  workdir_lib.write_json(os.path.join(workdir, "results.json"), results)
  writer.close()
  ckpt.close()
  metrics.console(f"Done: {json.dumps({k: v for k, v in results.items() if k != 'params_sha256'})}")
  return results


def _count(examples: Any) -> int:
  return sum(map(len, examples.values())) if isinstance(examples, dict) else len(examples)


@jax.jit
def _stack(per_call: list[Any]) -> Any:
  """Per-call device metrics (scalars, or (K,) from steps_per_call) -> one array per metric in
  step order."""
  return jax.tree.map(lambda *xs: jnp.concatenate([jnp.atleast_1d(x) for x in xs]), *per_call)


class _Pending:
  """The device metrics of the calls since the last fetch. Fetching them one by one costs about
  as much as a small step on a CPU, and stacking a whole log interval at once compiles a
  function of that many arguments (0.8 s for 200 steps of 7 metrics): so every CHUNK calls are
  stacked on the device as they come (one small function, compiled once) and a fetch stacks the
  chunks and the rest into one array per metric."""

  CHUNK = 16

  def __init__(self) -> None:
    self.steps: list[int] = []  # the step number of every value
    self.chunks: list[Any] = []
    self.recent: list[Any] = []

  def __bool__(self) -> bool:
    return bool(self.steps)

  def add(self, first_step: int, count: int, metrics: Any) -> None:
    self.steps.extend(range(first_step, first_step + count))
    self.recent.append(metrics)
    if len(self.recent) == self.CHUNK:
      self.chunks.append(_stack(self.recent))
      self.recent = []

  def warm_up(self, metrics: Any, calls: int) -> None:
    """Compiles the stacking that `calls` calls with metrics like these and their fetch need (run
    before training is timed, like the step's own compilation)."""
    chunk = _stack([metrics] * self.CHUNK)
    jax.block_until_ready(_stack([chunk] * (calls // self.CHUNK) + [metrics] * (calls % self.CHUNK)))

  def fetch(self) -> tuple[list[int], dict[str, np.ndarray]]:
    """(step numbers, one host array per metric in step order); empties the buffer."""
    out = self.steps, jax.device_get(_stack(self.chunks + self.recent))
    self.__init__()
    return out


def _train_row(fetched: dict[str, np.ndarray], nan_policy: str) -> dict[str, float]:
  """The train/ columns of a log line, from the interval's stacked metrics: means over its
  finite steps."""
  finite = fetched["finite"] if fetched["finite"].any() else np.ones_like(fetched["finite"])
  averaged = [k for k in fetched if k not in ("finite", "nonfinite_updates", "learning_rate")]
  row = {f"train/{k}": float(np.mean(fetched[k][finite])) for k in averaged}
  row["train/learning_rate"] = float(fetched["learning_rate"][-1])
  if nan_policy == "skip":
    row["train/nonfinite_updates"] = int(fetched["nonfinite_updates"][-1])
  return row
