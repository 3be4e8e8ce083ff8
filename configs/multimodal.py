"""Multimodal networks on the digits paired with text, offline (data/paired_digits.py).

Questions about a scene of two digits (digit_scenes: the answer needs the image and the text):
  python -m bigmodel_jax.main --config=configs/multimodal.py:image_only --workdir=runs/mm_image_only
  python -m bigmodel_jax.main --config=configs/multimodal.py:text_only --workdir=runs/mm_text_only
  python -m bigmodel_jax.main --config=configs/multimodal.py:late_fusion --workdir=runs/mm_late
  python -m bigmodel_jax.main --config=configs/multimodal.py:gated_fusion --workdir=runs/mm_gated
  python -m bigmodel_jax.main --config=configs/multimodal.py:early_fusion --workdir=runs/mm_early
  python -m bigmodel_jax.main --config=configs/multimodal.py:cross_attention --workdir=runs/mm_cross
  python -m bigmodel_jax.main --config=configs/multimodal.py:bottleneck_fusion --workdir=runs/mm_mbt
Captions (digit_captions): contrastive dual encoders, LiT, a captioner:
  python -m bigmodel_jax.main --config=configs/multimodal.py:clip --workdir=runs/mm_clip
  python -m bigmodel_jax.main --config=configs/multimodal.py:siglip --workdir=runs/mm_siglip
  python -m bigmodel_jax.main --config=configs/digits.py:cnn --workdir=runs/digits_cnn
  python -m bigmodel_jax.main --config=configs/multimodal.py:lit --workdir=runs/mm_lit \\
      --config.init_from=runs/digits_cnn
  python -m bigmodel_jax.main --config=configs/multimodal.py:captioner --workdir=runs/mm_captioner
  python -m bigmodel_jax.sample --workdir=runs/mm_captioner --num=10 [--temperature=1]

Variants (the arg):
  image_only, text_only   one encoder (2 blocks of width 64) of one modality: the baselines
  late_fusion             both encoders, pooled features concatenated
  gated_fusion            both encoders, pooled features mixed by a learned gate
  early_fusion            one Transformer (4 blocks) over the 8 image patches and the words
  cross_attention         image encoder, then text blocks cross-attending to the patches
  bottleneck_fusion       an encoder per modality exchanging through 4 shared tokens (MBT)
  clip, siglip            image tower (the digits CNN, its head the projection to 64) and text
                          tower (2 blocks); CLIP's softmax loss / SigLIP's sigmoid loss
  lit                     the image tower warm-started from a digits CNN classifier's workdir
                          (init_from) and locked but for its head; the text tower trained
  captioner               ViT encoder (16 patches of 2x2) and a 2-block decoder
Metrics: eval/accuracy (questions); eval/zero_shot_accuracy, eval/recall_at_{1,5}_image_to_text,
eval/recall_at_{1,5}_text_to_image (dual encoders); eval/exact_match (captioner).
"""

from bigmodel_jax import config as config_lib

CNN_TOWER = dict(name="cnn", channels=(32, 64, 64), kernel_sizes=(3, 3, 3), padding="SAME",
                 pool=(2, 2, 1), dense=(64,))  # configs/digits.py:cnn, so LiT can start from it
# vocab_size 0: the data set's tokenizer's (a text tower wider or narrower is an error)
FUSION = dict(name="fusion", vocab_size=0, patch=(4, 4), dim=64, depth=2, num_heads=4, mlp_dim=128,
              dropout=0.0)
DUAL = dict(name="dual_encoder", vocab_size=0, embed_dim=64, image_tower=CNN_TOWER, dim=64,
            depth=2, num_heads=4, mlp_dim=128)
VARIANTS = {
    "image_only": dict(FUSION, fusion="image_only"),
    "text_only": dict(FUSION, fusion="text_only"),
    "late_fusion": dict(FUSION, fusion="late"),
    "gated_fusion": dict(FUSION, fusion="gated"),
    "early_fusion": dict(FUSION, fusion="early"),
    "cross_attention": dict(FUSION, fusion="cross"),
    "bottleneck_fusion": dict(FUSION, fusion="bottleneck"),
    "clip": dict(DUAL, logit_scale=2.659260),  # log(1 / 0.07), CLIP's start
    "siglip": dict(DUAL, logit_scale=2.302585, logit_bias=-10.0),  # log(10), -10: SigLIP's
    "lit": dict(DUAL, logit_scale=2.302585, logit_bias=-10.0),
    "captioner": dict(name="captioner", vocab_size=0, max_len=8, patch=(2, 2), dim=64, depth=2,
                      decoder_depth=2, num_heads=4, mlp_dim=128),
}


def get_config(arg: str = "cross_attention"):
  c = config_lib.from_variant(VARIANTS, arg)
  c.data.kind = "paired"
  c.data.scale = 1 / 16  # pixel values 0..16
  c.data.cache = True
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 100
  c.batch_size = 128
  c.log_every = 100
  if c.model.name == "fusion":
    c.data.name, c.data.text_key, c.data.label_key = "digit_scenes", "question", "answer"
    c.eval_batch_size = 1000
    c.total_steps = 4000
    c.eval_every = c.checkpoint_every = 1000
  else:
    c.data.name, c.data.text_key = "digit_captions", "captions"
    c.eval_batch_size = 360
    c.total_steps = 1500
    c.eval_every = c.checkpoint_every = 500
  if c.model.name == "dual_encoder":
    c.objective.name = "contrastive"
    c.objective.loss = "sigmoid" if arg in ("siglip", "lit") else "softmax"
  if arg == "lit":  # LiT (Zhai et al. 2022): a classifier's features, locked
    c.init_into = "image"
    c.freeze = "^image/(?!head/)"
  if c.model.name == "captioner":
    c.objective.name = "captioning"
  return c
