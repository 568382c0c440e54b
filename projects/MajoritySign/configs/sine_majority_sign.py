# The sine experiment with the project's MajoritySign method:
#   python tools/train.py projects/MajoritySign/configs/sine_majority_sign.py
_base_ = ['../../../configs/sine/sine_base.py']
custom_imports = dict(imports=['graddrop_mtl', 'projects.MajoritySign.majority_sign'], allow_failed_imports=False)
optim_wrapper = dict(method=dict(type='MajoritySign'))
