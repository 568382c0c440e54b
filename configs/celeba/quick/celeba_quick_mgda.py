# Quick CelebA run, MGDA-UB, 100x lower lr than the others (appendix A.4): the method of ../celeba_mgda.py on the
# quick setup (celeba_quick_base.py).
_base_ = './celeba_quick_base.py'
optim_wrapper = dict(optimizer=dict(lr=1e-6), method=dict(_delete_=True, type='MGDA', normalization='loss+'))
