# Gradient penalty (rebuttal Table I "GP"): loss = sum_i L_i + w * |sum_i dL_i/dA|^2 at the final conv layer's output
# A, differentiated through the per-task gradients (double backward). The rebuttal gives no weight; w = 0.1 is our
# choice, a penalty small against the summed loss at initialisation (docs/benchmarks.md, "CelebA, synthetic set").
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradPenalty', weight=0.1))
