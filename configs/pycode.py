"""Byte-level language modelling of the Python standard library's source (pycode), offline.

  python -m bigmodel_jax.main --config=configs/pycode.py:transformer --workdir=runs/pycode_transformer
  python -m bigmodel_jax.main --config=configs/pycode.py:lstm --workdir=runs/pycode_lstm

Variants (the arg): transformer, a decoder-only LM (4 pre-LN blocks of width 128, rotary
positions, tied embeddings; scan_layers=True stacks the blocks, as pipeline stages need); lstm, an LSTM LM (one layer of 512). Windows of 128 bytes, batch 32,
AdamW with warmup and cosine decay. Evaluation reports loss and bits per byte on the validation
split; the byte-unigram entropy of that split is about 4.66 bits (see the data set's metadata).
"""

from bigmodel_jax.config import from_variant

VARIANTS = {
    "transformer": dict(name="decoder_lm", max_len=128, dim=128, depth=4, num_heads=4,
                        mlp_dim=512, positions="rotary", scan_layers=False),
    "lstm": dict(name="rnn_lm", cell="lstm", embed_dim=64, hidden=512),
}


def get_config(arg: str = "transformer"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "pycode"
  c.data.kind = "lm"
  c.data.input_key = "text"
  c.data.seq_len = 128
  c.data.eval_split = "validation"
  c.batch_size = 32
  c.eval_batch_size = 512
  c.total_steps = 800
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 3e-3
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 100
  c.log_every = 50
  c.eval_every = 400
  c.checkpoint_every = 400
  return c
