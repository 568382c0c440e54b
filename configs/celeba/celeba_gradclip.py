# Gradient clipping (rebuttal Table I "GC"): the plain sum, with the global L2 norm of all parameter gradients clipped
# to 10. The rebuttal gives no threshold; 10 is below the gradient norms at the start of training on the synthetic
# set (docs/benchmarks.md, "CelebA, synthetic set (600 steps)"), so clipping is active early and rarer later.
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Sum'), clip_grad=dict(max_norm=10.0, norm_type=2))
