"""Stand-ins for the cloud and cluster commands the launchers call, run on this machine.

tests/test_launch.py puts `gcloud`, `sbatch`, `srun`, `scontrol` and `scancel` on PATH, each a
one-line wrapper of `python fake_cluster.py NAME ARGS...`. Every call is recorded (one JSON line
in $FAKE_CLUSTER_DIR/calls.jsonl), and then carried out locally the way the real command would:

  gcloud compute tpus tpu-vm ssh NAME --zone=Z --worker=all --command=CMD
      runs CMD with `bash -c` in $FAKE_TPU_HOME (the workers' home: ~ there is not our home),
      once per worker ($FAKE_TPU_WORKERS, default 1), all at once; exits with the first failure.
  sbatch [--opt=value ...] SCRIPT [ARGS ...]
      reads the script's #SBATCH lines (the command line's options win), prints
      "Submitted batch job ID" and returns; a detached runner starts the job a moment later
      (a queue: $FAKE_SLURM_QUEUE_S, default 1 s), the script run by bash with SLURM's variables
      (one run per --array index, side by side up to its %P limit), and runs it again while
      `scontrol requeue ID` was called during the run. The runner writes
      $FAKE_CLUSTER_DIR/jobs/ID.done with the exit statuses of every run.
  srun [options] COMMAND ...
      starts $SLURM_NTASKS copies of COMMAND with SLURM_PROCID/SLURM_LOCALID and the step's
      variables; forwards SIGTERM; exits with the first non-zero status.
  scontrol requeue ID        marks the job to run again when its script ends.
  scancel --signal=SIG ID    sends SIG to the job's running tasks (as SLURM's --signal does:
                             the tasks, not the batch script).

What is not emulated is how processes find each other on a real TPU VM (the metadata server):
the fake TPU workers get SLURM's variables instead, which jax.distributed reads the same way
(SLURM_JOB_ID picks the coordinator's port; each job gets a free one).
"""

import concurrent.futures
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time

STATE = os.environ.get("FAKE_CLUSTER_DIR", "")
JOBS = os.path.join(STATE, "jobs")
# jax.distributed's SLURM coordinator port is SLURM_JOB_ID % 4096 + 61440
PORT_BASE, PORT_SPAN = 61440, 4096
# srun options that take their value as the next argument
SRUN_VALUED = {"--output", "--error", "-o", "-e", "--ntasks", "-n", "--nodes", "-N", "--cpu-bind",
               "--gpus", "--job-name", "-J", "--partition", "-p", "--time", "-t"}


def record(name: str, argv: list[str]) -> None:
  os.makedirs(JOBS, exist_ok=True)
  with open(os.path.join(STATE, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"command": name, "argv": argv, "cwd": os.getcwd()}) + "\n")


_TAKEN: set[int] = set()  # ports this process handed out (array tasks start side by side)


def free_job_id() -> int:
  """A job id whose jax.distributed coordinator port (61440-65535, above Linux's ephemeral
  range) is free now."""
  start = random.randrange(PORT_SPAN)
  for offset in range(PORT_SPAN):
    port = PORT_BASE + (start + offset) % PORT_SPAN
    if port in _TAKEN:
      continue
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
      except OSError:
        continue
    _TAKEN.add(port)
    return port - PORT_BASE + PORT_SPAN
  raise RuntimeError("no free port for a fake job")


def slurm_step_env(ntasks: int, task: int) -> dict[str, str]:
  return {"SLURM_NTASKS": str(ntasks), "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task),
          "SLURM_NODEID": "0", "SLURM_STEP_NODELIST": "localhost", "SLURM_NODELIST": "localhost",
          "SLURM_JOB_NODELIST": "localhost", "SLURM_STEP_NUM_NODES": "1", "SLURM_STEP_ID": "0"}


# --- gcloud ---------------------------------------------------------------------------------------


def gcloud(argv: list[str]) -> int:
  if argv[:4] != ["compute", "tpus", "tpu-vm", "ssh"]:
    print(f"fake gcloud: only `compute tpus tpu-vm ssh` is emulated, not {argv[:4]}", file=sys.stderr)
    return 2
  options = dict(a[2:].split("=", 1) for a in argv[5:] if a.startswith("--") and "=" in a)
  if options.get("worker") != "all" or "command" not in options or "zone" not in options:
    print("fake gcloud: expected --zone=..., --worker=all and --command=...", file=sys.stderr)
    return 2
  workers = int(os.environ.get("FAKE_TPU_WORKERS", "1"))
  home = os.environ["FAKE_TPU_HOME"]
  job = free_job_id()
  procs = []
  for w in range(workers):
    env = {**os.environ, "HOME": home, "SLURM_JOB_ID": str(job), **slurm_step_env(workers, w)}
    procs.append(subprocess.Popen(["bash", "-c", options["command"]], cwd=home, env=env))
  statuses = [p.wait() for p in procs]
  return next((s for s in statuses if s), 0)


# --- SLURM ----------------------------------------------------------------------------------------


def _options(args: list[str]) -> dict[str, str]:
  out = {}
  for a in args:
    key, _, value = a.lstrip("-").partition("=")
    out[key] = value
  return out


def sbatch(argv: list[str]) -> int:
  i = 0
  while i < len(argv) and argv[i].startswith("-"):
    i += 1
  script, args = argv[i], argv[i + 1:]
  with open(script) as f:
    directives = [line.split(None, 1)[1].strip() for line in f if line.startswith("#SBATCH ")]
  options = {**_options(directives), **_options(argv[:i])}
  job = free_job_id()
  spec = {"id": job, "script": os.path.abspath(script), "args": args, "options": options,
          "cwd": os.getcwd(), "env": dict(os.environ)}
  with open(os.path.join(JOBS, f"{job}.json"), "w") as f:
    json.dump(spec, f)
  with open(os.path.join(JOBS, f"{job}.log"), "a") as log:
    subprocess.Popen([sys.executable, os.path.abspath(__file__), "_run", str(job)], stdout=log,
                     stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd())
  print(f"Submitted batch job {job}", flush=True)
  return 0


def _array_indices(spec: str) -> list[int | None]:
  if not spec:
    return [None]
  first, _, last = spec.split("%")[0].partition("-")
  return list(range(int(first), int(last or first) + 1))


def run_job(job: str) -> int:
  """The job's life: queued a moment, then the script run (again after each requeue); an array
  runs its indices side by side, at most its %P limit at once."""
  with open(os.path.join(JOBS, f"{job}.json")) as f:
    spec = json.load(f)
  time.sleep(float(spec["env"].get("FAKE_SLURM_QUEUE_S", "1.0")))
  nodes = spec["options"].get("nodes", "1")
  ntasks = int(spec["options"].get("ntasks-per-node", "1")) * int(nodes)

  task_jobs = {i: str(free_job_id()) for i in _array_indices(spec["options"].get("array", ""))
               if i is not None}

  def run_index(index: int | None) -> list[int]:
    task_job, restarts, statuses = task_jobs.get(index, job), 0, []
    while True:
      env = {**spec["env"], "SLURM_JOB_ID": task_job, "SLURM_SUBMIT_DIR": spec["cwd"],
             "SLURM_NTASKS": str(ntasks), "SLURM_NNODES": nodes, "SLURM_JOB_NUM_NODES": nodes,
             "SLURM_RESTART_COUNT": str(restarts), "FAKE_SLURM_JOB": job}
      if index is not None:
        env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(index))
      statuses.append(subprocess.run(["bash", spec["script"], *spec["args"]], cwd=spec["cwd"],
                                     env=env).returncode)
      requeue = os.path.join(JOBS, f"{task_job}.requeue")
      if not os.path.exists(requeue):
        return statuses
      os.remove(requeue)
      restarts += 1

  array = spec["options"].get("array", "")
  limit = int(array.split("%")[1]) if "%" in array else None
  with concurrent.futures.ThreadPoolExecutor(limit) as pool:
    statuses = sum(pool.map(run_index, _array_indices(array)), [])
  with open(os.path.join(JOBS, f"{job}.done"), "w") as f:
    json.dump({"statuses": statuses}, f)
  return 0


def srun(argv: list[str]) -> int:
  i = 0
  while i < len(argv) and argv[i].startswith("-"):
    i += 2 if argv[i] in SRUN_VALUED else 1
  command = argv[i:]
  ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
  procs = [subprocess.Popen(command, env={**os.environ, **slurm_step_env(ntasks, t)})
           for t in range(ntasks)]
  job = os.environ.get("SLURM_JOB_ID", "")
  with open(os.path.join(JOBS, f"{job}.tasks"), "w") as f:
    f.write(" ".join(str(p.pid) for p in procs))
  for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
    signal.signal(sig, lambda s, _: [p.send_signal(s) for p in procs if p.poll() is None])
  statuses = [p.wait() for p in procs]
  os.remove(os.path.join(JOBS, f"{job}.tasks"))
  return next((s for s in statuses if s), 0)


def scontrol(argv: list[str]) -> int:
  if argv[:1] == ["requeue"]:
    open(os.path.join(JOBS, f"{argv[1]}.requeue"), "w").close()
  return 0


def scancel(argv: list[str]) -> int:
  options = _options([a for a in argv if a.startswith("-")])
  job = next(a for a in argv if not a.startswith("-"))
  sig = getattr(signal, "SIG" + options.get("signal", "TERM").removeprefix("SIG"))
  path = os.path.join(JOBS, f"{job}.tasks")
  if not os.path.exists(path):
    print(f"fake scancel: job {job} has no running tasks", file=sys.stderr)
    return 1
  for pid in open(path).read().split():
    os.kill(int(pid), sig)
  return 0


COMMANDS = {"gcloud": gcloud, "sbatch": sbatch, "srun": srun, "scontrol": scontrol,
            "scancel": scancel}


def main() -> int:
  name, argv = sys.argv[1], sys.argv[2:]
  if name == "_run":
    return run_job(argv[0])
  record(name, argv)
  return COMMANDS[name](argv)


def install(bin_dir: str) -> None:
  """Writes the wrappers (gcloud, sbatch, ...) into bin_dir, to be put first on PATH."""
  os.makedirs(bin_dir, exist_ok=True)
  for name in COMMANDS:
    path = os.path.join(bin_dir, name)
    with open(path, "w") as f:
      f.write(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
              f"{shlex.quote(os.path.abspath(__file__))} {name} \"$@\"\n")
    os.chmod(path, 0o755)


if __name__ == "__main__":
  sys.exit(main())
