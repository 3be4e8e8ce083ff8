"""Pretrained weights in and out (bigmodel_jax.convert, bigmodel_jax.predict): converted models
compute their reference library's logits (torchvision, transformers) to fp32 rounding.

The references were computed by tests/fixtures/pretrained/make.py (torch, torchvision,
transformers; not needed here). Tolerance: 1e-5 of the largest logit, as the issue asks: the
same arithmetic in another summation order (XLA's vs PyTorch's kernels) differs by ~1e-7
relative per layer, and ~50 layers add up to well under 1e-5."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import REPO, run_main_batch, small_config

from bigmodel_jax.faults import ConfigError
from bigmodel_jax.runs import load

FIXTURES = os.path.join(REPO, "tests", "fixtures", "pretrained")
sys.path.insert(0, FIXTURES)
import weights  # noqa: E402  (tests/fixtures/pretrained/weights.py)

TOLERANCE = 1e-5
# each Hugging Face fixture's config: (configs/FILE.py, variant)
HF_CONFIGS = {"gpt2": ("text", "gpt2_tiny"), "llama": ("text", "llama_tiny"),
              "mixtral": ("moe", "mixtral_tiny"), "llama3": ("text", "llama_tiny")}


def hf_config(family):
  file, arg = HF_CONFIGS[family]
  return small_config(arg, file)


def close(got, want):
  error = float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())
  assert error <= TOLERANCE, f"logits differ by {error:.2e} of the largest"


def run(module, *args):
  return subprocess.run([sys.executable, "-m", f"bigmodel_jax.{module}", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_torch_files_read_without_torch_exactly():
  from bigmodel_jax.pretrained import files
  tensors = files.read_torch(os.path.join(FIXTURES, "densenet.pth"))
  shapes = [(k, list(v.shape), str(v.dtype)) for k, v in tensors.items()]
  drawn = weights.draw(shapes, seed=0)  # what make.py put into the model before torch.save
  assert any(v.dtype == np.int64 for v in tensors.values())  # num_batches_tracked
  for name, value in drawn.items():
    np.testing.assert_array_equal(tensors[name], value, err_msg=name)


@pytest.mark.parametrize("fixture,taken", [
    ("resnet18", ["model.depth=18 (was 50)"]), ("resnet50", []),
    ("resnext50_32x4d", ["model.groups=32 (was 1)", "model.width_per_group=4 (was 64)"])])
def test_torchvision_resnets_compute_torchvision_logits(tmp_path, fixture, taken):
  """Each converted with configs/imagenet2012.py:resnet50: the depth and ResNeXt's groups and
  width come from the checkpoint's shapes. Wide-ResNet-50-2 (ResNet-50 with wider bottlenecks:
  the same names and layouts) is checked by hand: its fixture is in the folder, and converting
  it gives torchvision's logits too."""
  from bigmodel_jax.inference import predict
  from bigmodel_jax.pretrained import convert
  from bigmodel_jax.pretrained import files
  with open(os.path.join(FIXTURES, f"{fixture}.json")) as f:
    spec = json.load(f)
  source = str(tmp_path / f"{fixture}.safetensors")
  files.write_safetensors(source, weights.draw(spec["tensors"], spec["seed"]))
  ref = np.load(os.path.join(FIXTURES, f"{fixture}_logits.npz"))
  report = convert.convert_in(source, small_config("resnet50", "imagenet2012"), str(tmp_path / "w"))
  assert report["left_over"] == [] and report["num_outputs"] == 1000
  assert report["taken"] == taken
  close(predict.outputs(str(tmp_path / "w"), ref["inputs"]), ref["logits"])
  if fixture == "resnet50":  # training mode: normalized by the batch's statistics
    run = load.load(str(tmp_path / "w"))
    model, variables = run.model, run.variables
    train_logits, _ = model.apply(variables, jnp.asarray(ref["inputs"]), train=True,
                                  mutable=["batch_stats"])
    # A batch of 2's statistics are ill-conditioned: torch's own float32 logits are ~1e-4 off
    # its float64 ones (make.py). Ours must be no further from float64 than torch's float32.
    exact = ref["train_logits64"]
    ours, torchs = (float(np.abs(np.asarray(x) - exact).max() / np.abs(exact).max())
                    for x in (train_logits, ref["train_logits"]))
    assert ours <= max(TOLERANCE, 1.5 * torchs), (ours, torchs)


def _tiny(name, tmp_path):
  """The tiny torchvision models converted with the full-size variants' configs: their shapes
  give the rest (a ViT's heads are not in its shapes: the config gives them)."""
  from bigmodel_jax.pretrained import convert
  if name == "densenet":
    c = small_config("densenet121", "imagenet2012", **{"data.image_size": 32})
  else:
    c = small_config("vit", "imagenet2012", **{"model.num_heads": 4, "data.image_size": 32})
  convert.convert_in(os.path.join(FIXTURES, f"{name}.pth"), c, str(tmp_path / name))
  return str(tmp_path / name)


@pytest.mark.parametrize("name", ["densenet", "vit"])
def test_torchvision_densenet_and_vit_compute_torchvision_logits(tmp_path, name):
  from bigmodel_jax.inference import predict
  ref = np.load(os.path.join(FIXTURES, f"{name}_logits.npz"))
  close(predict.outputs(_tiny(name, tmp_path), ref["inputs"]), ref["logits"])


@pytest.mark.parametrize("family", ["gpt2", "llama", "mixtral"])
def test_hugging_face_lms_compute_transformers_logits_also_with_the_cache(tmp_path, family):
  import jax

  from bigmodel_jax.inference import predict
  from bigmodel_jax.pretrained import convert
  ref = np.load(os.path.join(FIXTURES, f"{family}_logits.npz"))
  report = convert.convert_in(os.path.join(FIXTURES, family), hf_config(family),
                              str(tmp_path / "w"))
  assert report["left_over"] == []
  close(predict.outputs(str(tmp_path / "w"), ref["tokens"]), ref["logits"])
  run = load.load(str(tmp_path / "w"))
  model, variables = run.model, run.variables
  tokens = jnp.asarray(ref["tokens"])
  cache = jax.tree.map(jnp.zeros_like, model.init(jax.random.PRNGKey(0), tokens, decode=True)["cache"])
  prompt = 8  # as make.py: the prompt at once, then one token at a time
  logits, cache = model.apply({**variables, "cache": cache}, tokens[:, :prompt], decode=True,
                              start=0, mutable=["cache"])
  steps = [logits]
  for t in range(prompt, tokens.shape[1]):
    logits, cache = model.apply({**variables, **cache}, tokens[:, t:t + 1], decode=True, start=t,
                                mutable=["cache"])
    steps.append(logits)
  close(jnp.concatenate(steps, 1), ref["cached"])


@pytest.mark.parametrize("family,to", [("gpt2", "hf"), ("llama3", "hf"), ("mixtral", "hf"),
                                       ("vit", "torchvision")])
def test_export_gives_back_the_checkpoint_tensor_for_tensor(tmp_path, family, to):
  """Out and in again: the same tensors, bit for bit (the reference library loading the export
  is checked by hand: make.py --check-export)."""
  from bigmodel_jax.pretrained import convert
  from bigmodel_jax.pretrained import files
  if family == "vit":
    workdir, source = _tiny("vit", tmp_path), os.path.join(FIXTURES, "vit.pth")
  else:
    workdir, source = str(tmp_path / "w"), os.path.join(FIXTURES, family)
    convert.convert_in(source, hf_config(family), workdir)
  convert.convert_out(workdir, to, str(tmp_path / "out"))
  original, hf = files.read(source)
  exported, hf_again = files.read(str(tmp_path / "out") if to == "hf" else
                                  str(tmp_path / "out" / "model.safetensors"))
  if family == "gpt2":  # transformers ties lm_head to wte and leaves it out as well
    original.pop("lm_head.weight", None)
  assert sorted(exported) == sorted(original)
  for name, value in original.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)
  modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
  assert len(set(modes.values())) == 1, modes  # model.safetensors too (safetensors makes 0600)
  if hf is not None:
    for key in ("hidden_size", "n_embd", "num_key_value_heads", "rms_norm_eps", "vocab_size",
                "rope_parameters"):
      assert hf_again.get(key) == hf.get(key), key
    assert os.path.exists(tmp_path / "out" / "tokenizer.json") == (family == "gpt2")


@pytest.mark.parametrize("fixture,variant,taken", [
    ("llama_theta", "llama_tiny", ["model.rope_base=50000.0 (was 500000.0)"]),
    ("llama3", "llama_tiny", ["model.rope_base=50000.0 (was 500000.0)",
                              "model.rope_scaling='llama3' (was 'none')",
                              "model.rope_factor=4.0 (was 1.0)",
                              "model.rope_original_max_len=64 (was 8192)"]),
    ("gpt2_eps", "gpt2_tiny", ["model.norm_epsilon=0.001 (was 1e-05)"])])
def test_a_hugging_face_checkpoint_gives_its_architecture_with_or_without_a_config(
    tmp_path, fixture, variant, taken):
  """config.json's options (a rotary base, Llama 3.1's rope scaling, a layer-norm epsilon) are
  the model's whether a config is given (its differing options listed) or not."""
  from bigmodel_jax.inference import predict
  from bigmodel_jax.pretrained import convert
  ref = np.load(os.path.join(FIXTURES, f"{fixture}_logits.npz"))
  report = convert.convert_in(os.path.join(FIXTURES, fixture), None, str(tmp_path / "bare"))
  assert report["left_over"] == [] and report["taken"]  # every option, from the defaults
  close(predict.outputs(str(tmp_path / "bare"), ref["tokens"]), ref["logits"])
  report = convert.convert_in(os.path.join(FIXTURES, fixture), small_config(variant, "text"),
                              str(tmp_path / "configured"))
  assert report["taken"] == taken
  bare, configured = (load.read_config(str(tmp_path / w)).model for w in ("bare", "configured"))
  assert {k: bare[k] for k in report["architecture"]} == {
      k: configured[k] for k in report["architecture"]}
  # a run warm-started from it takes the same (and its tokenizer), unless told not to
  from bigmodel_jax.pretrained import architecture
  run_config = small_config(variant, "text", init_from=str(tmp_path / "bare"))
  adopted, listed = architecture.of_init_from(run_config)
  assert {k: adopted.model[k] for k in report["architecture"]} == {
      k: bare[k] for k in report["architecture"]}
  assert listed[:len(taken)] == taken
  assert adopted.data.tokenizer == (str(tmp_path / "bare" / "tokenizer.model")
                                    if fixture == "llama_theta" else "bpe:4096")
  run_config.init_architecture = False
  assert architecture.of_init_from(run_config) == (run_config, [])
  if fixture == "llama3":  # the scaling matters: without it the logits are off
    converted = load.load(str(tmp_path / "configured"))
    plain = converted.model.clone(rope_scaling="none").apply(converted.variables,
                                                             jnp.asarray(ref["tokens"]))
    with pytest.raises(AssertionError):
      close(plain, ref["logits"])


def test_a_checkpoint_of_another_architecture_is_named_and_nothing_written(tmp_path):
  """Through the CLI: what the checkpoint cannot tell or our model cannot represent is named
  (exit 2, one line, nothing written); the tiny Llama with a rotary base of 50,000 converts
  under llama_tiny's config with no override, and predict gives its logits."""
  out = tmp_path / "w"
  yarn = tmp_path / "yarn"
  yarn.mkdir()
  hf = json.loads(open(os.path.join(FIXTURES, "llama", "config.json")).read())
  hf["rope_parameters"] = {"rope_theta": 1e4, "rope_type": "yarn", "factor": 4.0}
  (yarn / "config.json").write_text(json.dumps(hf))
  os.symlink(os.path.join(FIXTURES, "llama", "model.safetensors"), yarn / "model.safetensors")
  vit = [f"--source={FIXTURES}/vit.pth", "--config=configs/imagenet2012.py:vit"]
  bad = {"set --config.model.num_heads": [*vit, "--config.data.image_size=32"],
         "set --config.data.image_size=32": [*vit, "--config.model.num_heads=4"],
         "rope_type 'yarn' is not supported": [f"--source={yarn}"],
         "needs --config": [f"--source={FIXTURES}/vit.pth"],
         "does not exist": [f"--source={tmp_path}/missing.pth", "--config=configs/text.py:gpt2_tiny"]}
  good = [f"--source={FIXTURES}/llama_theta", "--config=configs/text.py:llama_tiny"]
  results = run_main_batch([[*args, f"--workdir={out}{i}"] for i, args in
                            enumerate([*bad.values(), good])], command="convert")
  for i, (message, (status, _, stderr)) in enumerate(zip(bad, results)):
    assert status == 2 and message in stderr and stderr.strip().count("\n") == 0, stderr
    assert not os.path.exists(f"{out}{i}")
  out = f"{out}{len(bad)}"
  status, stdout, stderr = results[-1]
  assert status == 0, stderr
  assert "over the config: model.rope_base=50000.0 (was 500000.0)\n" in stdout, stdout
  ref = np.load(os.path.join(FIXTURES, "llama_theta_logits.npz"))
  np.save(tmp_path / "tokens.npy", ref["tokens"])
  r = run("predict", f"--workdir={out}", f"--inputs={tmp_path}/tokens.npy",
          f"--out={tmp_path}/logits.npy")
  assert r.returncode == 0, r.stderr
  close(np.load(tmp_path / "logits.npy"), ref["logits"])


def test_a_bare_safetensors_file_converts_under_its_config(tmp_path):
  """Without config.json there is no architecture to take: the config describes it."""
  import shutil

  from bigmodel_jax.inference import predict
  from bigmodel_jax.pretrained import convert
  shutil.copy(os.path.join(FIXTURES, "llama", "model.safetensors"), tmp_path / "m.safetensors")
  report = convert.convert_in(str(tmp_path / "m.safetensors"), hf_config("llama"),
                              str(tmp_path / "w"))
  assert report["family"] == "llama" and report["taken"] == [] and report["architecture"] == {}
  ref = np.load(os.path.join(FIXTURES, "llama_logits.npz"))
  close(predict.outputs(str(tmp_path / "w"), ref["tokens"]), ref["logits"])


def test_torchvision_architecture_is_read_from_the_shapes():
  from bigmodel_jax.pretrained import architecture, files
  config = small_config("resnet50", "imagenet2012")
  for fixture, differs in [("resnet18", {"depth": 18}), ("resnet50", {}),
                           ("resnext50_32x4d", {"groups": 32, "width_per_group": 4}),
                           ("wide_resnet50_2", {"width_per_group": 128})]:
    with open(os.path.join(FIXTURES, f"{fixture}.json")) as f:
      shapes = {name: np.broadcast_to(np.float32(0), shape)
                for name, shape, _ in json.load(f)["tensors"]}
    assert architecture.of_torchvision("torchvision_resnet", shapes, config) == {
        "depth": 50, "stage_sizes": (), "bottleneck": None, "widths": (64, 128, 256, 512),
        "groups": 1, "width_per_group": 64, "stem": "imagenet", **differs}, fixture
  tensors = files.read_torch(os.path.join(FIXTURES, "densenet.pth"))
  assert architecture.of_torchvision("torchvision_densenet", tensors, config) == {
      "depth": 13, "block_sizes": (2, 2), "growth": 8, "bn_size": 2, "stem_features": 16,
      "stem": "imagenet"}


def test_predict_command_writes_the_logits(tmp_path):
  ref = np.load(os.path.join(FIXTURES, "gpt2_logits.npz"))
  r = run("convert", f"--source={FIXTURES}/gpt2", "--config=configs/text.py:gpt2_tiny",
          f"--workdir={tmp_path}/w")
  assert r.returncode == 0, r.stderr
  assert "28 tensors mapped" in r.stdout and "0 left over" in r.stdout
  np.save(tmp_path / "tokens.npy", ref["tokens"])
  np.save(tmp_path / "floats.npy", ref["tokens"].astype(np.float32))
  vocab = json.loads((tmp_path / "w" / "convert.json").read_text())["num_outputs"]
  ids = ref["tokens"].astype(np.int64)
  ids[0, 0] = vocab
  np.save(tmp_path / "ids.npy", ids)
  (status, _, stderr), floats, out_of_range = run_main_batch(
      [[f"--workdir={tmp_path}/w", f"--inputs={tmp_path}/{name}.npy", f"--out={tmp_path}/{out}"]
       for name, out in [("tokens", "logits.npy"), ("floats", "bad.npy"), ("ids", "bad.npy")]],
      command="predict")
  assert status == 0, stderr
  close(np.load(tmp_path / "logits.npy"), ref["logits"])
  assert floats[0] == 2 and "token ids" in floats[2]
  assert out_of_range[0] == 2 and out_of_range[2].strip().startswith(
      f"error: --inputs: token ids must be in [0, {vocab}) (the model's vocabulary)"), out_of_range
  assert not (tmp_path / "bad.npy").exists()
  from bigmodel_jax.inference import predict
  for bad_id in (-1, 2**32 + 5):  # the last wraps into range as int32
    ids[0, 0] = bad_id
    with pytest.raises(ConfigError, match=r"token ids must be in \[0, "):
      predict.outputs(f"{tmp_path}/w", ids)
  before = (tmp_path / "tokens.npy").read_bytes()
  r = run("predict", f"--workdir={tmp_path}/w", f"--inputs={tmp_path}/tokens.npy",
          f"--out={tmp_path}/./tokens.npy")
  assert r.returncode == 2 and "is the --inputs file" in r.stderr
  assert (tmp_path / "tokens.npy").read_bytes() == before
  r = run("convert", f"--source={FIXTURES}/gpt2", f"--workdir={tmp_path}/w", "--to=hf",
          f"--out={tmp_path}/hf")
  assert r.returncode == 2 and r.stderr.strip() == (
      "error: use one of --source (a checkpoint to convert into --workdir) or --to (export "
      "--workdir to --out), not both"), r.stderr
  assert not (tmp_path / "hf").exists()


def test_a_killed_writers_partial_directory_is_removed_by_the_next_writer(tmp_path):
  """convert and quantize write OUT.tmpPID, then rename it: one a killed process left (its PID
  no longer runs) goes when OUT is next written; a running process's stays."""
  from bigmodel_jax.runs import workdir
  dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True).stdout)
  stale = tmp_path / f"out.tmp{dead}"
  stale.mkdir()
  (stale / "half_written").write_text("x")
  alive = subprocess.Popen(["sleep", "60"])
  try:
    running = tmp_path / f"out.tmp{alive.pid}"
    running.mkdir()
    with workdir.whole_directory(str(tmp_path / "out"), last=()) as tmp:
      with open(os.path.join(tmp, "done"), "w") as f:
        f.write("y")
    assert (tmp_path / "out" / "done").exists() and not stale.exists() and running.exists()
  finally:
    alive.kill()


def test_a_model_transformers_would_compute_otherwise_is_not_exported(tmp_path):
  import shutil

  from bigmodel_jax.pretrained import convert
  workdir = tmp_path / "w"
  convert.convert_in(os.path.join(FIXTURES, "gpt2"), small_config("gpt2_tiny", "text"), str(workdir))
  config = json.loads((workdir / "config.json").read_text())
  config["model"]["positions"] = "rotary"  # GPT-2's shapes, but rotary: not a GPT-2
  rotary = tmp_path / "rotary"
  shutil.copytree(workdir, rotary)
  (rotary / "config.json").write_text(json.dumps(config))
  with pytest.raises(ConfigError, match="positions='learned'.*cannot be exported as gpt2"):
    convert.convert_out(str(rotary), "hf", str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
