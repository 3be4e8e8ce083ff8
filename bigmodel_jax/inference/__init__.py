"""What the commands do with a finished workdir (read through runs/load.py).

  predict.py     outputs of inputs from a file (python -m bigmodel_jax.predict)
  samples.py     text, images or captions of a trained model (python -m bigmodel_jax.sample)
  quantize.py    post-training quantization, evaluated, and LoRA export
                 (python -m bigmodel_jax.quantize)
"""
