"""Weights from other ecosystems, in and out: files.py reads and writes their files (safetensors,
PyTorch state_dicts without torch, Hugging Face model directories), families.py maps each
family's tensor names and layouts to this package's parameters and back, hf_config.py checks
a Hugging Face config.json against a model's options, convert.py turns a checkpoint into a
workdir and a workdir back into files (python -m bigmodel_jax.convert)."""
