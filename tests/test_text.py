"""The user's own text (a text directory: test_corpus.py reads and stores it), BPE and SentencePiece tokenizers, packed windows,
bits per byte, and fine-tuning a converted Llama (a SentencePiece tokenizer.model, a rotary base
no config of ours has) on a text directory with sampling afterwards."""

import json
import os
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (ONE_DEVICE, REPO, documented_commands, kill_and_resume, run_main,
                      run_main_batch)

FIXTURES = os.path.join(REPO, "tests", "fixtures", "pretrained")
TEXTS = ["def add(a, b):\n    return a + b\n", "class Café:\n    prix = '3 €'\n",
         "import os\nprint(os.sep)\n", "for i in range(3):\n    print(i * i)\n",
         "x = [1, 2, 3]\ny = sum(x)\n", "while True:\n    break\n"]


def text_dir(path, copies: int = 20, field: str = "body"):
  path.mkdir()
  for i, text in enumerate(TEXTS):
    (path / f"doc{i}.txt").write_text(text * copies)
  with open(path / "more.jsonl", "w") as f:
    for i, text in enumerate(TEXTS):
      f.write(json.dumps({field: text * copies, "id": i}) + "\n")
  return path


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_a_packed_document_is_computed_as_if_alone(positions):
  from bigmodel_jax.models.transformer import DecoderLM
  model = DecoderLM(vocab_size=50, max_len=16, dim=32, depth=2, num_heads=4, mlp_dim=64,
                    positions=positions)
  a, b = jnp.arange(3, 9)[None], jnp.arange(20, 30)[None]  # 6 + 10 tokens
  packed = {"tokens": jnp.concatenate([a, b], 1),
            "segment_ids": jnp.asarray([[0] * 6 + [1] * 10]),
            "positions": jnp.asarray([list(range(6)) + list(range(10))])}
  variables = model.init(jax.random.PRNGKey(0), b)
  together = model.apply(variables, packed)
  np.testing.assert_allclose(together[:, 6:], model.apply(variables, b), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(together[:, :6], model.apply(variables, a), rtol=1e-5, atol=1e-5)


def test_bpe_tokens_count_the_bytes_they_stand_for(tmp_path):
  from bigmodel_jax.data import tokenizer
  path = str(tmp_path / "tok.json")
  tokenizer.train_bpe(iter(TEXTS * 5), 300, path)
  tok = tokenizer.load_file(path)
  for text, (ids, covered) in zip(TEXTS, tok.documents(TEXTS)):  # é, € included
    assert ids[-1] == tok.eos_id and covered[-1] == 0
    assert covered.sum() == len(text.encode()) and len(ids) < len(text.encode())
    assert tok.decode(ids[:-1].tolist()) == text


@pytest.mark.parametrize("normalization", ["identity", "nmt_nfkc"])
def test_sentencepiece_tokens_are_sentencepieces_and_count_the_text_bytes(tmp_path, normalization):
  """A tokenizer.model reads as the sentencepiece library encodes and decodes; its tokens'
  bytes add up to each document's UTF-8 bytes exactly, also where the model's normalization
  (NFKC, collapsed whitespace) drops or rewrites characters, so bits per byte are exact."""
  import sentencepiece

  from bigmodel_jax.data import tokenizer
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter("".join(TEXTS * 3).splitlines()), model_prefix=str(tmp_path / "sp"),
      vocab_size=300, model_type="bpe", byte_fallback=True, character_coverage=0.99,
      normalization_rule_name=normalization, remove_extra_whitespaces=normalization != "identity",
      minloglevel=2)
  path = str(tmp_path / "sp.model")
  reference = sentencepiece.SentencePieceProcessor(model_file=path)
  tok = tokenizer.load_file(path)
  assert tok.vocab_size == 300 and tok.eos_id == reference.eos_id() == 2
  texts = [*TEXTS, "  spaces   and ｆｕｌｌ-width ①  ", "日本語のテキスト\n", ""]
  for text, (ids, covered) in zip(texts, tok.documents(texts)):
    assert ids.tolist() == reference.encode(text) + [2], text
    assert covered.sum() == len(text.encode()), text
    assert tok.decode(ids.tolist()) == reference.decode(reference.encode(text))
    if normalization == "identity":
      assert tok.decode(tok.encode(text)) == text  # byte fallback: every text comes back


def test_bad_text_input_is_one_line_exit_2_and_nothing_written(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "notes.md").write_text("not text of ours")
  d = text_dir(tmp_path / "text")
  (tmp_path / "fake.model").write_bytes(b"not a sentencepiece model")
  cases = {
      f"--config.data.text_dir={empty}": "has 0 .txt / .jsonl",
      f"--config.data.text_dir={d}": "line 1 has no text field 'text'",
      f"--config.data.tokenizer={tmp_path}/missing.json": "no such tokenizer file",
      f"--config.data.tokenizer={tmp_path}/fake.model": "fake.model: not a SentencePiece model",
  }
  runs = [["--config=configs/text.py:gpt2_tiny", f"--workdir={tmp_path}/w{i}",
           *([flag] if "text_dir" in flag else [flag, f"--config.data.text_dir={d}",
                                                "--config.data.text_field=body"])]
          for i, flag in enumerate(cases)]
  for i, (message, (status, _, stderr)) in enumerate(zip(cases.values(), run_main_batch(runs))):
    assert status == 2 and message in stderr, stderr
    assert stderr.strip().count("\n") == 0, stderr
    assert not (tmp_path / f"w{i}").exists()


def _readme_recipe(tmp_path, text) -> list[list[str]]:
  """The README's commands from the Hugging Face directory to the export back, as written, with
  the placeholders filled: HF_DIR the fixture Llama with a rotary base of 50,000 and a
  SentencePiece tokenizer.model, MY_TEXT a text directory, runs/ and the .npy files under
  tmp_path."""
  readme = open(os.path.join(REPO, "README.md")).read()
  block = readme[readme.index("# A Hugging Face directory"):]
  swap = {"HF_DIR": f"{FIXTURES}/llama_theta", "MY_TEXT": str(text), "runs/": f"{tmp_path}/runs/",
          "=tokens.npy": f"={tmp_path}/tokens.npy", "=logits.npy": f"={tmp_path}/logits.npy"}
  commands = []
  for command in documented_commands(block[:block.index("```")]):
    for placeholder, value in swap.items():
      command = [a.replace(placeholder, value) for a in command]
    commands.append(command)
  assert [c[0].rpartition(".")[2] for c in commands] == ["convert", "predict", "main", "sample",
                                                         "convert"]
  return commands


def test_the_readme_fine_tune_recipe_runs_as_written_and_resumes_exactly(tmp_path):
  """The README's recipe, each command as printed (tiny step counts added to the fine-tuning):
  convert a Llama, predict, fine-tune on a text directory (the checkpoint's architecture and
  SentencePiece tokenizer, no model overrides; packed), sample, export back. The fine-tuning
  killed at a random moment resumes to the same result."""
  convert, predict, finetune, sample, export = _readme_recipe(
      tmp_path, text_dir(tmp_path / "text", field="text"))
  assert run_main(*convert[1:], module=convert[0]).returncode == 0
  reference_logits = np.load(f"{FIXTURES}/llama_theta_logits.npz")
  np.save(tmp_path / "tokens.npy", reference_logits["tokens"])
  r = run_main(*predict[1:], module=predict[0])
  assert r.returncode == 0, r.stderr
  error = np.abs(np.load(tmp_path / "logits.npy") - reference_logits["logits"]).max()
  assert error <= 1e-5 * np.abs(reference_logits["logits"]).max()  # transformers' logits
  args = [a for a in finetune[1:] if not a.startswith("--workdir=")] + [
      "--config.total_steps=16", "--config.batch_size=8", "--config.checkpoint_every=4",
      "--config.eval_every=8", "--config.log_every=4", "--config.schedule.warmup_steps=4"]
  # one device, as the recipe runs on a workstation (sharded training is tested elsewhere)
  killed, reference = kill_and_resume(args, tmp_path, 0.3, env=ONE_DEVICE)
  assert 0 < killed["start_step"] < 16
  for key in ("params_sha256", "eval/loss", "eval/bits_per_byte", "eval/perplexity"):
    assert killed[key] == reference[key], key
  assert reference["eval/bits_per_byte"] < 8  # below a uniform guess over bytes
  with open(tmp_path / "reference" / "metrics.jsonl") as f:
    losses = [row["train/loss"] for row in map(json.loads, f) if "train/loss" in row]
  assert losses[-1] < losses[0]
  finished = f"--workdir={tmp_path / 'reference'}"
  r = run_main(*[finished if a.startswith("--workdir=") else a for a in sample[1:]],
               module=sample[0])
  assert r.returncode == 0 and r.stdout.startswith("def ") and len(r.stdout) > 40, r.stderr
  r = run_main(*[finished if a.startswith("--workdir=") else a for a in export[1:]],
               module=export[0])
  assert r.returncode == 0 and (tmp_path / "runs" / "text_finetune_hf" / "model.safetensors"
                                ).exists(), r.stderr
  assert (tmp_path / "runs" / "text_finetune_hf" / "tokenizer.model").exists()
  config = json.loads((tmp_path / "reference" / "config.json").read_text())
  assert config["model"]["rope_base"] == 50000.0 and config["data"]["tokenizer"].endswith(
      "hf_converted/tokenizer.model")
