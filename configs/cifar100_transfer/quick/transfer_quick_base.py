# Quick ImageNet32 -> CIFAR-100 transfer setup for method comparisons on the CPU
# (tools/analysis/compare_methods.py transfer): a small DenseNet-BC (depth 16, growth 8, otherwise the configs'
# model) on the synthetic sets whose source classes share visual factors with the target classes, 400 iterations of
# 8 + 8 images, the configs' Adam at lr 1e-3 (constant: the configs' decay starts at 100k iterations).
# Data (written by compare_methods.py on first use, or by hand):
#   python tools/make_synthetic_transfer.py --out-dir data/cifar100_transfer_synth --seed 0 --relation shared
# The control where the source cannot help (independent source classes):
#   python tools/make_synthetic_transfer.py --out-dir data/cifar100_transfer_synth_control --seed 0 \
#       --relation independent
#   and --cfg-options data_root=... for every dataset (compare_methods.py transfer --control does this).
# What differs from ../cifar100_transfer_base.py besides size and length: no data-loading workers and grad_mode
# fixed (a run is a function of randomness.seed alone), validation every 100 iterations (the per-step losses,
# times and validation metrics land in vis_data/scalars.json, read by compare_methods.py, and in TensorBoard).
_base_ = ['../cifar100_transfer_base.py']

data_root = 'data/cifar100_transfer_synth/'
max_iters = 400

model = dict(depth=16, growth_rate=8)
train_dataloader = dict(num_workers=0, dataset=dict(source=dict(data_root=data_root),
                                                    target=dict(data_root=data_root)))
val_dataloader = dict(num_workers=0, dataset=dict(data_root=data_root))
test_dataloader = dict(num_workers=0, dataset=dict(data_root=data_root))

train_cfg = dict(max_iters=max_iters, val_interval=100)
optim_wrapper = dict(grad_mode='batched', log_per_task=False)
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=100, max_keep_ckpts=1, save_best='cifar100/top1_error', rule='less'))
randomness = dict(seed=0)
