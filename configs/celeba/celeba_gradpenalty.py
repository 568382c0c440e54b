# Gradient penalty (rebuttal Table I "GP"): loss = sum_i L_i + w * |sum_i dL_i/dA|^2 at the final conv layer's output
# A, differentiated through the per-task gradients (double backward). The rebuttal gives no weight; at initialisation
# |sum_i dL_i/dA|^2 is about 1 for a summed loss of about 28 (synthetic set, batch 8), and w = 0.1 is our choice.
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradPenalty', weight=0.1))
