# Quick CelebA setup for method comparisons on the CPU (tools/analysis/compare_methods.py celeba): the configs'
# model and optimiser on the synthetic set with structured attributes, 32 x 32 inputs, 400 steps of batch 8.
# Data (written by compare_methods.py on first use, or by hand):
#   python tools/make_synthetic_celeba.py --out-dir data/celeba_synth --num-images 4000 --seed 0 --size 32
# What differs from ../celeba_base.py, and why:
# - lr 1e-4 instead of the paper's 1e-3 (MGDA: 1e-6, the appendix's 100x lower): with 1e-3 the network learns only
#   the attribute priors in a few hundred steps (docs/benchmarks.md, "CelebA, synthetic set (600 steps)");
# - no data-loading workers, grad_mode fixed: a run is a function of randomness.seed alone (same seed, same result
#   on the CPU), with no choice by timing;
# - validation every 100 steps (the comparison's curves), the best checkpoint by validation error kept;
# - the base configs' backends: vis_data/scalars.json (read by compare_methods.py) and TensorBoard.
# Seed: --cfg-options randomness.seed=S (the weights, the data order and the methods' random streams).
_base_ = ['../celeba_base.py']

data_root = 'data/celeba_synth'
img_size = (32, 32)
max_iters = 400

train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, img_size=img_size))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, img_size=img_size))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, img_size=img_size))

train_cfg = dict(max_iters=max_iters, val_interval=100)
optim_wrapper = dict(optimizer=dict(lr=1e-4), grad_mode='batched')
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=100, max_keep_ckpts=1, save_best='celeba/error_rate', rule='less'))
randomness = dict(seed=0)
