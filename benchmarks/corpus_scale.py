"""Language-model corpora at two sizes ten times apart (issue 42): start-up and memory with a
prepared token store, and preparation speed against the tokenizers library's own batch encoding.

  .venv/bin/python benchmarks/corpus_scale.py [--sizes_mb=24,240] [--big_mb=2000] [--out=DIR]

For each size it writes a synthetic corpus (.jsonl files of ~0.8 MB, documents of Zipf-drawn
words: text, not a real corpus; the files the path hash puts in validation and test hold 50 KB,
so evaluation costs the same at every size), then:
  prepare    the training and validation stores with one tokenizer.json (a BPE of 4,096 tokens
             trained once on the first 8 MB of the smallest corpus, shared by every size, so
             sizes compare); tokens/s of preparing the training split (data.workers=-1: one
             worker per core), from the preparation's own "done" line;
  encode     the same training files, the same tokenizer, tokenizers' encode_batch_fast over
             batches of documents in this process (its own threads on every core): tokens/s
             (reading and JSON-parsing the files included, as preparation includes them);
  run        configs/text.py:gpt2_tiny for 5 steps on the prepared stores (a second run after a
             first that prepared them): time to the first step (results.json's
             time_to_first_step_s) and the peak resident memory of the process (ru_maxrss of
             the child), the final evaluation over the whole validation split included.
--big_mb: a corpus of that size with the bytes tokenizer (data.tokenizer=""), prepared and
trained for 5 steps the same way (the 2 GB check of issue 42; 0 skips it).
Not included: writing the synthetic corpus, installing, the BPE training.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from bigmodel_jax.data import corpus, tokenizer  # noqa: E402
FILE_MB = 0.8


def write_corpus(path: str, mb: float, seed: int = 0) -> None:
  if os.path.isdir(path):
    return
  os.makedirs(path + ".tmp", exist_ok=True)
  rng = np.random.default_rng(seed)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(20000)]
  p = 1.0 / np.arange(1, len(words) + 1)
  p /= p.sum()
  f, total = 0, 0.0
  while total < mb:
    name = f"part{f:05d}.jsonl"
    f += 1
    # validation and test files (by the path hash) are small: evaluation costs the same at
    # every size, and the 2 GB run evaluates in seconds
    size = FILE_MB if corpus.split_files([name])["train"] else 0.05
    total += size
    with open(os.path.join(path + ".tmp", name), "w") as out:
      written = 0
      while written < size * 1e6:
        ids = rng.choice(len(words), size=(8, 350), p=p)
        for row in ids:
          text = " ".join(words[i] for i in row) + ".\n"
          line = json.dumps({"text": text}) + "\n"
          out.write(line)
          written += len(line)
  os.rename(path + ".tmp", path)


def run_main(args: list[str]) -> tuple[dict, float, str]:
  """results.json, the child's peak RSS in MB, stderr."""
  with open(os.path.join(REPO, ".corpus_scale.err"), "w+") as err:
    proc = subprocess.Popen([sys.executable, "-m", "bigmodel_jax.main", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=err,
                            env={**os.environ,
                                 "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the largest so far
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    stderr = err.read()
  os.remove(os.path.join(REPO, ".corpus_scale.err"))
  if proc.returncode:
    raise SystemExit(stderr[-3000:])
  workdir = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  return results, usage.ru_maxrss / 1024, stderr


def encode_rate(files: list[str], tokenizer_path: str) -> float:
  from tokenizers import Tokenizer
  tok = Tokenizer.from_file(tokenizer_path)
  start, tokens = time.perf_counter(), 0
  for path in files:
    with open(path) as f:
      texts = [json.loads(line)["text"] for line in f]
    for i in range(0, len(texts), 256):
      tokens += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i:i + 256]))
  return tokens / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes_mb", default="24,240")
  parser.add_argument("--big_mb", type=float, default=2000)
  parser.add_argument("--out", default="/tmp/corpus_scale")
  a = parser.parse_args()
  os.makedirs(a.out, exist_ok=True)
  sizes = [float(s) for s in a.sizes_mb.split(",")]
  tok_path = os.path.join(a.out, "bpe4096.json")
  if not os.path.exists(tok_path):
    write_corpus(os.path.join(a.out, "sample"), 8, seed=1)
    texts = (json.loads(line)["text"] for f in sorted(os.listdir(os.path.join(a.out, "sample")))
             for line in open(os.path.join(a.out, "sample", f)))
    tokenizer.train_bpe(texts, 4096, tok_path)
  rows = []
  for mb in sizes:
    text = os.path.join(a.out, f"text_{mb:g}mb")
    write_corpus(text, mb)
    data = os.path.join(a.out, f"data_{mb:g}mb")
    args = ["--config=configs/text.py:gpt2_tiny", f"--config.data.text_dir={text}",
            f"--config.data.data_dir={data}", f"--config.data.tokenizer={tok_path}",
            "--config.total_steps=5", "--config.log_every=5", "--config.eval_every=5",
            "--config.checkpoint_every=5", "--config.schedule.warmup_steps=1"]
    _, _, stderr = run_main([*args, f"--workdir={a.out}/prepare_{mb:g}"])  # prepares
    done = re.findall(r"done: ([\d,]+) tokens in ([\d.]+) s", stderr)
    prepared = int(done[0][0].replace(",", "")) / float(done[0][1]) if done else float("nan")
    td = corpus.text_dir(text, "text")
    files = [os.path.join(text, p.path) for p in td.split("train").parts]
    encoded = encode_rate(files, tok_path)
    results, rss, _ = run_main([*args, f"--workdir={a.out}/run_{mb:g}"])
    rows.append((f"{mb:g} MB", prepared, encoded, results["time_to_first_step_s"], rss))
  if a.big_mb:
    text = os.path.join(a.out, f"text_{a.big_mb:g}mb")
    write_corpus(text, a.big_mb)
    args = ["--config=configs/text.py:gpt2_tiny", f"--config.data.text_dir={text}",
            f"--config.data.data_dir={a.out}/data_{a.big_mb:g}mb", "--config.data.tokenizer=",
            "--config.total_steps=5", "--config.log_every=5", "--config.eval_every=5",
            "--config.checkpoint_every=5", "--config.schedule.warmup_steps=1"]
    t0 = time.time()
    _, _, stderr = run_main([*args, f"--workdir={a.out}/prepare_big"])
    first = time.time() - t0
    results, rss, _ = run_main([*args, f"--workdir={a.out}/run_big"])
    rows.append((f"{a.big_mb:g} MB, bytes", float("nan"), float("nan"),
                 results["time_to_first_step_s"], rss))
    print(f"{a.big_mb:g} MB: first run (preparing the stores) {first:.0f} s; "
          f"{results['eval/bits_per_byte']:.3f} bits per byte after 5 steps")
  print(f"{'corpus':>16} {'prepare tok/s':>14} {'encode tok/s':>13} {'ratio':>6} "
        f"{'first step s':>13} {'peak RSS MB':>12}")
  for name, p, e, t, r in rows:
    print(f"{name:>16} {p:>14,.0f} {e:>13,.0f} {p / e:>6.2f} {t:>13.1f} {r:>12,.0f}")


if __name__ == "__main__":
  main()
