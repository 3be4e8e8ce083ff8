"""Language models on your own text: a directory of .txt / .jsonl(.gz/.zst) / .parquet files, a
BPE tokenizer, packed windows; pretrained GPT-2 / Llama weights from Hugging Face
(bigmodel_jax.convert) to fine-tune.

  python -m bigmodel_jax.convert --source=HF_DIR --workdir=runs/hf_converted
  python -m bigmodel_jax.main --config=configs/text.py --workdir=runs/text_finetune \
      --config.data.text_dir=MY_TEXT --config.init_from=runs/hf_converted
  python -m bigmodel_jax.sample --workdir=runs/text_finetune --prompt="def " --length=50

Variants: gpt2_tiny and llama_tiny (the shapes of tests/fixtures/pretrained/'s random models),
gpt2 (GPT-2 small, 124M) and llama (a 1B Llama-3.2-shaped model), to train from scratch; a run
that starts from a converted checkpoint (init_from) takes that checkpoint's model options and
tokenizer over the variant's. The data set is `textdir` over data.text_dir (split by file: 90%
train, 5% validation, 5% test; each split tokenized once into a token store, read lazily: the
GUIDE.md's "Corpora of any size"), tokenized by data.tokenizer ("bpe:4096" trains one on the
training split and keeps it in the workdir; a path loads a tokenizer.json or a SentencePiece
tokenizer.model), documents packed into windows of data.seq_len tokens.
"""

from bigmodel_jax.config import from_variant

_GPT2 = dict(name="decoder_lm", positions="learned", tie_embeddings=True, norm="layernorm",
             norm_epsilon=1e-5, mlp="gelu", use_bias=True, num_kv_heads=0, rope_base=10000.0)
_LLAMA = dict(name="decoder_lm", positions="rotary", norm="rmsnorm", mlp="swiglu",
              use_bias=False)
VARIANTS = {
    "gpt2_tiny": dict(_GPT2, max_len=64, dim=64, depth=2, num_heads=4, mlp_dim=256),
    "gpt2": dict(_GPT2, max_len=1024, dim=768, depth=12, num_heads=12, mlp_dim=3072),
    "llama_tiny": dict(_LLAMA, max_len=64, dim=64, depth=2, num_heads=4, num_kv_heads=2,
                       mlp_dim=176, norm_epsilon=1e-5, rope_base=500000.0, tie_embeddings=False),
    "llama": dict(_LLAMA, max_len=2048, dim=2048, depth=16, num_heads=32, num_kv_heads=8,
                  mlp_dim=8192, norm_epsilon=1e-5, rope_base=500000.0, tie_embeddings=True),
}


def get_config(arg: str = "gpt2_tiny"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "textdir"
  c.data.kind = "lm"
  c.data.input_key = "text"
  c.data.seq_len = min(c.model.max_len, 256)
  c.data.eval_split = "validation"
  c.data.tokenizer = "bpe:4096"
  c.data.packing = True
  c.batch_size = 16
  c.eval_batch_size = 64
  c.total_steps = 200
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.1
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 20
  c.log_every = 20
  c.eval_every = 100
  c.checkpoint_every = 100
  return c
