"""ImageNet-1k (TFDS catalogue `imagenet2012`; you must download and prepare it yourself): 224x224
ResNets, the width variants and ViT-B/16, with Inception-crop + flip training and the standard
resize-256 / center-crop-224 evaluation.

  python -m bigmodel_jax.main --config=configs/imagenet2012.py:resnet50 --workdir=runs/in1k_resnet50
  python -m bigmodel_jax.main --config=configs/imagenet2012.py:resnet18 --workdir=runs/in1k_resnet18
  python -m bigmodel_jax.main --config=configs/imagenet2012.py:vit --workdir=runs/in1k_vit_b16

Variants: resnet18, resnet34, resnet50, resnet101, resnet152 (torchvision v1.5 architectures),
resnext50 (32x4d), wide_resnet50 (-2), densenet121, mobilenet (v1, width 1.0), vit (ViT-B/16).
Each converts torchvision's weights (bigmodel_jax.convert; a ViT with --config.model.mlp=gelu_exact):

  python -m bigmodel_jax.convert --source=resnet50.pth --config=configs/imagenet2012.py:resnet50 --workdir=runs/tv_resnet50

Convnets: SGD with Nesterov momentum 0.9, learning rate 0.1 per 256 examples (0.4 at batch 1024),
5 warm-up epochs then cosine to zero over 90 epochs, weight decay 1e-4 on kernels (4e-5 for
MobileNet), zero-initialized last BatchNorm scale in each residual block (Goyal et al., 2017).
ViT: AdamW, learning rate 1e-3, weight decay 1e-4, 10k warm-up steps, cosine over 90 epochs,
gradient clipping at 1.0 (the recipe of big_vision's "Better plain ViT baselines").
Batch 1024 needs a pod or a cluster; scale learning_rate with batch_size if you change it.
"""

from bigmodel_jax.config import from_variant

NUM_TRAIN = 1_281_167
VARIANTS = {
    **{f"resnet{d}": dict(name="resnet", depth=d, zero_init_residual=True)
       for d in (18, 34, 50, 101, 152)},
    "resnext50": dict(name="resnet", depth=50, groups=32, width_per_group=4,
                      zero_init_residual=True),
    "wide_resnet50": dict(name="resnet", depth=50, width_per_group=128, zero_init_residual=True),
    "densenet121": dict(name="densenet", depth=121, block_sizes=(), growth=32, bn_size=4,
                        stem_features=64),
    "mobilenet": dict(name="mobilenet"),
    # mlp: gelu (tanh approximation) trains as before; a torchvision ViT converts with gelu_exact
    "vit": dict(name="vit", patch=(16, 16), dim=768, depth=12, num_heads=12, mlp_dim=3072,
                mlp="gelu"),
}


def get_config(arg: str = "resnet50"):
  c = from_variant(VARIANTS, arg)
  c.data.name = "imagenet2012"
  c.data.eval_split = "validation"
  c.data.image_size = 224
  c.data.augment = "inception_crop"
  c.data.scale = 1 / 255
  c.data.mean = (0.485, 0.456, 0.406)
  c.data.std = (0.229, 0.224, 0.225)
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.total_epochs = 90.0
  if arg == "vit":
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 1e-4
    c.optimizer.grad_clip_norm = 1.0
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 10_000
  else:
    c.optimizer.name = "nesterov"
    c.optimizer.learning_rate = 0.4
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 4e-5 if arg == "mobilenet" else 1e-4
    c.schedule.name = "warmup_cosine"
    c.schedule.warmup_steps = 5 * NUM_TRAIN // c.batch_size
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 2500
  return c
