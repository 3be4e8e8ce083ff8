"""Weights from other ecosystems, in and out: files.py reads and writes their files (safetensors,
PyTorch state_dicts without torch, Hugging Face model directories), families.py maps each
family's tensor names and layouts to this package's parameters and back, hf_config.py reads a
Hugging Face config.json as a model's options (and writes one), architecture.py reads a
torchvision state_dict's shapes the same way and gives a config the options a checkpoint fixes,
convert.py turns a checkpoint into a workdir and a workdir back into files
(python -m bigmodel_jax.convert)."""
