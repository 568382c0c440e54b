# MGDA-UB at the shared activation, with the 'loss+' normalisation (n_i = L_i |g_i|; our choice, the paper gives
# none). The two tasks' gradients live on disjoint rows (orthogonal), so the min-norm weights are
# alpha_i ~ n_i^2 / |g_i|^2 = L_i^2.
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='MGDA', normalization='loss+'))
