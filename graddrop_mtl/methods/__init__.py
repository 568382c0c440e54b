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
``CAGrad``         conflict-averse gradient: best worst-task improvement in a ball around the mean gradient
``NashMTL``        Nash bargaining weights, (G a)_i = 1 / a_i
``FairGrad``       alpha-fair weights, (G w)_i = w_i^(-1/alpha)
``IMTLG``          IMTL-G: equal projections of the update onto every task's unit gradient
``AlignedMTL``     Aligned-MTL: the gradient system's condition number made 1
``UPGrad``         each gradient projected onto the dual cone of all of them, averaged
``DualProj``       the mean gradient projected onto the dual cone of the task gradients
``ConFIG``         the direction of equal cosine to every task, scaled by the sum of projections
``GradVac``        Gradient Vaccine: pairwise cosines raised to their running targets
``ExcessMTL``      exponentiated weights on running excess-risk estimates (batch-summed AdaGrad statistics)
``SDMGrad``        MGDA pulled towards the mean gradient (warm-started inner SGD on the weights)
``MoCo``           MGDA-like weights on tracked, normalised (batch-summed) gradients
``MoDo``           one projected step of MGDA's weights per training step
``UW``             uncertainty weighting: learnt log-variances (trainable parameters)
``IMTLL``          IMTL-L: learnt loss scales (trainable parameters)
``DWA``            Dynamic Weight Average of the loss descent rates
``RLW``            Random Loss Weighting: softmax of a normal draw
``GLS``            geometric loss strategy: the geometric mean of the losses
``Random``         random gradient weights, softmax of a normal draw (the heads unweighted)
``Krum``           (multi-)Krum: the gradients closest to their neighbours, averaged
``TrimmedMean``    coordinate-wise trimmed mean over the tasks
``FAMO``           Fast Adaptive Multitask Optimization: logits balancing the log-loss decrease
``DBMTL``          DB-MTL: log losses, every task's gradient rescaled to the largest (moving-average) magnitude
``STCH``           smooth Tchebycheff scalarisation of the log-normalised losses (after a log-loss warm-up)
=================  ========================================================================================

Loss weightings (:class:`~graddrop_mtl.methods.weighting.LossWeighting`) need only the task losses; Gram-matrix
methods (:class:`~graddrop_mtl.methods.weighting.GramWeighting`) the per-task gradients' T x T Gram matrix.
"""
from .aligned_mtl import AlignedMTL
from .base import METHODS, Method, build_method, register_method
from .cagrad import CAGrad
from .config import ConFIG
from .db_mtl import DBMTL
from .dualproj import DualProj
from .dwa import DWA
from .famo import FAMO
from .gls import GLS
from .graddrop import GradDrop, RandomGradDrop
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtl import IMTLG, IMTLL
from .mgda import MGDA, min_norm_simplex
from .nash_mtl import FairGrad, NashMTL
from .pcgrad import PCGrad, pcgrad_coefficients
from .random_weighting import Random
from .rlw import RLW
from .robust import Krum, TrimmedMean
from .simple import Compose, GradPenalty, Sum
from .stch import STCH
from .upgrad import UPGrad
from .uw import UW
from .weighting import GramWeighting, LossWeighting

__all__ = ['METHODS', 'Method', 'build_method', 'register_method', 'Sum', 'GradDrop', 'RandomGradDrop', 'PCGrad',
           'MGDA', 'GradNorm', 'GradPenalty', 'Compose', 'min_norm_simplex', 'pcgrad_coefficients', 'AlignedMTL',
           'CAGrad', 'DWA', 'FAMO', 'GradVac', 'IMTLG', 'IMTLL', 'FairGrad', 'NashMTL', 'RLW', 'UPGrad', 'UW',
           'DBMTL', 'STCH',
           'GramWeighting', 'LossWeighting', 'ConFIG', 'DualProj', 'GLS', 'Random', 'Krum', 'TrimmedMean']

# Issue 23, more gradient methods: ExcessMTL (exponentiated weights on running excess-risk estimates), SDMGrad
# (MGDA pulled towards the mean gradient, warm-started inner SGD), MoCo (weights on tracked, normalised gradients),
# MoDo (one projected step of MGDA's weights per training step).
from .excess_mtl import ExcessMTL  # noqa: E402
from .moco import MoCo  # noqa: E402
from .modo import MoDo  # noqa: E402
from .sdmgrad import SDMGrad  # noqa: E402

__all__ += ['ExcessMTL', 'SDMGrad', 'MoCo', 'MoDo']
