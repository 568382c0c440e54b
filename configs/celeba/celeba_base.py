# CelebA, 40 attributes as 40 tasks (paper appendix A.4; rebuttal Table I).
# Nine 3x3 conv layers with batch norm ([CONV-3-64][MAX][CONV-3-128]x2[MAX][CONV-3-256]x2[MAX][CONV-3-512]x2), DENSE-512
# x2 with batch norm, a 40-way head without; one sigmoid cross-entropy loss per attribute. The multitask methods act
# on the output of the final conv layer (shared='backbone').
# Adam (0.9, 0.999), batch 8, lr 1e-3 x 0.96 every 2400 steps. Validation on the val split keeps the best checkpoint
# by error rate (the appendix reports the performance peak); tools/test.py evaluates it on the test split.
# This base trains with the plain sum (the baseline); the method configs beside it override only optim_wrapper
# (and MGDA its learning rate). Run: python tools/train.py configs/celeba/celeba_graddrop.py
_base_ = ['../_base_/default_runtime.py']

# img_align_celeba/*.jpg, list_attr_celeba.txt, list_eval_partition.txt (see graddrop_mtl/datasets/celeba.py)
data_root = 'data/celeba'
# The appendix does not state the input resolution; 64x64 keeps the run affordable on a CPU. The model
# average-pools the final conv map to 8x8 before DENSE-512 (an identity at 64x64), so other sizes need no change
# to the model (img_size=None trains on the stored 218x178 images).
img_size = (64, 64)

model = dict(
    type='CelebAMultiTaskNet',
    head_pool=(8, 8),
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[0.0, 0.0, 0.0], std=[255.0, 255.0, 255.0]))

train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CelebADataset', data_root=data_root, split='train', img_size=img_size))
val_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CelebADataset', data_root=data_root, split='val', img_size=img_size, test_mode=True))
test_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CelebADataset', data_root=data_root, split='test', img_size=img_size, test_mode=True))
# celeba/error_rate (%), celeba/f1max (%), celeba/loss (sum of the 40 mean BCE losses), celeba/majority_error_rate
val_evaluator = dict(type='CelebAMetric')
test_evaluator = val_evaluator

# 120k steps (about 6 epochs of the 162,770 training images): the appendix trains "past convergence" without a
# step count; validation every 4000 steps picks the peak.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=120000, val_interval=4000)

# One task per loss_<attribute> key (40, in attribute order); per-task logging is off (40 x 3 scalars per line).
# The per-task gradients are exact (float32). Opt-in approximation: the 40 per-task gradients at the backbone output
# go through DENSE-512's [512, 32768] weight, and with
#   --cfg-options optim_wrapper.task_grad_precision.cpu=bf16
# that product runs on the CPU with bfloat16 inputs and float32 accumulation: faster and approximate on CPUs with
# AMX (docs/benchmarks.md, "CelebA, bf16 per-task gradients"); on CPUs without oneDNN's bf16 fast path (AVX-512
# BF16 without AMX, or none) it changes nothing. The one backward through the trunk and the heads stays float32
# either way (README.md).
optim_wrapper = dict(
    type='MultiTaskOptimWrapper',
    optimizer=dict(type='Adam', lr=1e-3, betas=(0.9, 0.999)),
    method=dict(type='Sum'),
    shared='backbone',
    log_per_task=False)
# lr = 1e-3 * 0.96^floor(step / 2400); `end` is explicit so that any max_iters builds.
param_scheduler = [dict(type='StepLR', by_epoch=False, begin=0, end=1000000000, step_size=2400, gamma=0.96)]

default_hooks = dict(
    checkpoint=dict(interval=4000, max_keep_ckpts=2, save_best='celeba/error_rate', rule='less'))
