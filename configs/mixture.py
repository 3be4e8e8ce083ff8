"""A byte-level language model on a weighted mixture of two corpora: `code` (pycode, the Python
standard library's source, offline) and `prose` (a directory of your own text).

  python -m bigmodel_jax.main --config=configs/mixture.py --workdir=runs/mixture \
      --config.data.corpora.prose.text_dir=MY_TEXT \
      --config.data.corpora.code.weight=0.75 --config.data.corpora.prose.weight=0.25

Each corpus is tokenized once into its token store (data/lm.py) and walks its own shuffled order;
the rows of every batch go to the corpora in proportion to the normalized weights (over any 1,000
batches each corpus's share of the tokens is within 0.5% of its weight), and a corpus that runs
out repeats (the run's first lines say which, and metrics log train/epochs/NAME). Evaluation
reports eval/NAME/bits_per_byte per corpus and their mean. A corpus sets its weight and
data.text_dir, text_field, name, input_key, data_dir and splits; the rest of config.data
(seq_len, tokenizer, packing) is shared.
"""

import ml_collections

from bigmodel_jax.config import from_variant

VARIANTS = {  # configs/pycode.py's transformer
    "transformer": dict(name="decoder_lm", max_len=128, dim=128, depth=4, num_heads=4,
                        mlp_dim=512, positions="rotary", scan_layers=False),
}


def get_config(arg: str = "transformer"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "textdir"  # a corpus that names no data set reads its text_dir
  c.data.kind = "lm"
  c.data.input_key = "text"
  c.data.seq_len = 128
  c.data.eval_split = "validation"
  c.data.corpora = ml_collections.ConfigDict({
      "code": {"weight": 0.5, "name": "pycode", "text_dir": ""},  # or name=textdir + a text_dir
      "prose": {"weight": 0.5, "text_dir": ""},
  })
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
