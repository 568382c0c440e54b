"""Multitask gradient methods: plain PyTorch, one small class each (no mmengine import).

Every method turns the stacked per-task gradients at the shared activation, ``grads [T, *A.shape]``, into the one
gradient sent into the trunk: ``method.combine(grads, activation=A, losses=L, generator=g)``. See
:mod:`graddrop_mtl.methods.base` for the contract and :data:`METHODS` for the registry.

=================  ========================================================================================
``Sum``            the plain sum (baseline)
``GradDrop``       Gradient Sign Dropout (k, leak, batch-separated, keep_grad_norm)
``RandomGradDrop`` one sign per element by a fair coin (the rebuttal's RGD)
``PCGrad``         projecting conflicting gradients; ``iterative=True`` is the appendix's Iterative PCGrad
``MGDA``           MGDA-UB min-norm weights with 'none' | 'l2' | 'loss' | 'loss+' normalisation
``GradNorm``       learnt task weights balancing gradient norms
``GradPenalty``    gradient-norm penalty at the shared activation (double backward)
``Compose``        a weighting (GradNorm, MGDA) followed by a combiner (GradDrop)
=================  ========================================================================================
"""
from .base import METHODS, Method, build_method, register_method
from .gradnorm import GradNorm
from .graddrop import GradDrop, RandomGradDrop
from .mgda import MGDA, min_norm_simplex
from .pcgrad import PCGrad, pcgrad_coefficients
from .simple import Compose, GradPenalty, Sum

__all__ = ['METHODS', 'Method', 'build_method', 'register_method', 'Sum', 'GradDrop', 'RandomGradDrop', 'PCGrad',
           'MGDA', 'GradNorm', 'GradPenalty', 'Compose', 'min_norm_simplex', 'pcgrad_coefficients']
