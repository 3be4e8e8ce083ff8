"""Weights from other ecosystems, in and out: files.py reads and writes their files (safetensors,
PyTorch state_dicts without torch, Hugging Face model directories), families.py maps each
family's tensor names and layouts to this package's parameters and back. convert.py is the
command."""
