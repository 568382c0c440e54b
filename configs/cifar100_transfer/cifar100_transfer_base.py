# ImageNet (32x32) -> CIFAR-100 transfer (paper appendix A.5, Table 5; rebuttal Table I).
# DenseNet-BC-100 (k=12, compression 0.5, no dropout) shared by both datasets, separate batch-norm parameters per
# domain, one head per dataset; every batch is 8 ImageNet + 8 CIFAR-100 images, divided by 256, no augmentation.
# Adam (0.9, 0.999), lr 1e-3 constant to step 100k, then x0.94 every 2000 steps; 250k steps.
# This base trains with the plain sum (the transfer baseline); the method configs beside it override only
# optim_wrapper. Run: python tools/train.py configs/cifar100_transfer/cifar100_transfer_graddrop.py
_base_ = ['../_base_/default_runtime.py']

# cifar-100-python/{train,test,meta}, Imagenet32_train/train_data_batch_{1..10}, Imagenet32_val/val_data
data_root = 'data/cifar100_transfer/'

model = dict(
    type='DenseNetTransfer',
    depth=100,
    growth_rate=12,
    compression=0.5,
    domains=('imagenet', 'cifar'),     # domain ids 0 and 1; loss keys loss_imagenet, loss_cifar in this order
    num_classes=(1000, 100),
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[0.0, 0.0, 0.0], std=[256.0, 256.0, 256.0]))

# batch_size counts pairs: 8 pairs = 8 ImageNet + 8 CIFAR-100 images in one batch of 16 (ImageNet rows first).
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='transfer_collate'),
    dataset=dict(
        type='PairedTransferDataset',
        source=dict(type='ImageNet32Dataset', data_root=data_root, split='train'),
        target=dict(type='CIFAR100Dataset', data_root=data_root, split='train', val_fraction=0.2)))
# Validation: the last 10k (20%) of the official CIFAR-100 training file; test: the official test file.
val_dataloader = dict(
    batch_size=100,
    num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='transfer_collate'),
    dataset=dict(type='CIFAR100Dataset', data_root=data_root, split='val', val_fraction=0.2, test_mode=True))
test_dataloader = dict(
    batch_size=100,
    num_workers=2,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='transfer_collate'),
    dataset=dict(type='CIFAR100Dataset', data_root=data_root, split='test', test_mode=True))
val_evaluator = dict(type='TransferMetric', domain=1)    # cifar100/top1_error (%), cifar100/cross_entropy
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=250000, val_interval=5000)

# The multitask wrapper takes the per-task gradients at the output of the last dense block ('backbone'), one task per
# dataset in the order [imagenet (source), cifar (transfer)]; per-task method parameters (GradDrop's leak) follow it.
optim_wrapper = dict(
    type='MultiTaskOptimWrapper',
    optimizer=dict(type='Adam', lr=1e-3, betas=(0.9, 0.999)),
    method=dict(type='Sum'),
    shared='backbone',
    tasks=['loss_imagenet', 'loss_cifar'])
# lr 1e-3 for the first 100k updates; after 100k + 2000 j updates it is 1e-3 * 0.94^j. `end` is explicit so that
# shorter runs (train_cfg.max_iters < 100k) build too (mmengine's default end, max_iters, would precede `begin`).
param_scheduler = [dict(type='StepLR', by_epoch=False, begin=100000, end=1000000000, step_size=2000, gamma=0.94)]

default_hooks = dict(
    checkpoint=dict(interval=5000, max_keep_ckpts=3, save_best='cifar100/top1_error', rule='less'))
