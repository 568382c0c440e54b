# MGDA-UB (Sener & Koltun 2018) with the 'loss+' normalisation (the default of their code). Appendix A.4: MGDA needed
# a 100x lower learning rate on CelebA (1e-5 instead of 1e-3); the schedule is otherwise the same.
_base_ = './celeba_base.py'
optim_wrapper = dict(optimizer=dict(lr=1e-5), method=dict(_delete_=True, type='MGDA', normalization='loss+'))
