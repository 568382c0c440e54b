"""Time our multitask ``combine`` against TorchJD's aggregators and LibMTL's weightings on the same gradients.

Every implementation gets the same stacked per-task gradients at a shared activation, ``grads [T, *A.shape]``:

* ours: every registered method (:func:`method_rows`, from the registry, so a method registered later gets a row;
  ``Compose`` as GradNorm + GradDrop, and the batch-separated GradDrop) on the native shape, statistics collection
  off (the wrapper collects them only every ``stats_interval`` steps); a loss weighting (``loss_only``) is timed by
  ``weigh_losses``, which is what the wrapper calls for it (no per-task gradients); ``--methods`` picks rows;
* TorchJD (``torchjd.aggregation``): aggregators work on a ``[T, D]`` matrix, so they get the flattened view
  ``grads.reshape(T, -1)`` (a view, no copy); every method TorchJD has (:func:`torchjd_factories`), with our
  settings made TorchJD's where the defaults differ (:data:`OURS_LIKE_TORCHJD`). RandomGradDrop is
  ``GradDrop(f=lambda P: 1/2)``; ``MGDA()`` (its Frank-Wolfe solver, default ``epsilon=1e-3, max_iters=100``) also
  with ``epsilon=1e-6, max_iters=10000`` (column ``torchjd 1e-6``), nearer the accuracy of our exact solver. CAGrad
  and Nash-MTL need ``cvxpy`` (with ``clarabel`` / ``ecos``), UPGrad and DualProj ``quadprog`` and ``qpsolvers``:
  without them those cells stay empty (cvxpy 1.9 needs numpy 2; 1.5.3 runs on the environment's numpy 1.23);
* LibMTL 1.1.5 (``LibMTL.weighting``): its weightings are ``nn.Module`` mixins of a trainer that computes the
  per-task gradients itself. The weighting modules are imported on their own (``LibMTL/__init__`` imports
  torchvision models, which are not needed), and the gradient hooks of ``AbsWeighting`` are replaced by the given
  gradients: ``PCGrad`` and ``MGDA`` on the flattened ``[T, D]`` matrix (``rep_grad=False``; the result is stored
  instead of being written into parameters), ``GradDrop`` on the per-example gradients ``[T, B, ...]`` with
  ``rep_grad=True`` (its only mode), where it always multiplies by ``sign(input)`` and sums over the batch: that is
  our batch-separated variant, so it is timed against ``GradDrop(batch_separated=True)``. Its final
  ``rep.backward(g)`` on a leaf activation is included (one accumulate into ``.grad``).

Shapes: a PointPillars-like activation ``[T=9, 2, 384, 160, 160]`` (``--pp-size 80`` for ``[9, 2, 384, 80, 80]``)
and a CelebA-like ``[T=40, 8, 512, 8, 8]``. Gradients are Gaussian plus a shared component (so that tasks partly
agree and MGDA's weights have a non-trivial support), float32.

Peers are not dependencies of the project: install them into a throwaway folder and point the script at it::

    python -m pip install --target /tmp/peers torchjd --no-deps
    python -m pip install --target /tmp/peers --no-deps "cvxpy==1.5.3" clarabel ecos scs osqp qdldl quadprog qpsolvers
    python -m pip download libmtl==1.1.5 --no-deps -d /tmp/peers_dl
    python tools/analysis/benchmark_combine.py --peers-path /tmp/peers \
        --libmtl /tmp/peers_dl/LibMTL-1.1.5-py3-none-any.whl

The table gives the best wall time of ``--repeats`` calls after one warm-up call, ours and the peers' calls
taking turns (the minimum: on a shared machine other processes only add time), and ``vs best peer`` = ours /
fastest available peer (below 1: ours is faster). ``--check`` also prints how far each implementation's MGDA weights
are from the simplex QP's optimum (KKT residual on the Gram matrix scaled to unit mean diagonal; 0 at the optimum).
``--gram`` (no peers needed) instead times the Gram matrix behind PCGrad and MGDA three ways, with their errors, and
our MGDA solver: ``OMP_NUM_THREADS=1 python tools/analysis/benchmark_combine.py --gram --repeats 5``.
``--graddrop-paths`` (no peers needed) times our GradDrop and Random GradDrop with their statistics on (as the wrapper
runs them on a statistics step) by the compiled pass (``graddrop_mtl.methods.graddrop_kernel``) and by the PyTorch
path, and checks that the two agree: ``OMP_NUM_THREADS=1 python tools/analysis/benchmark_combine.py --graddrop-paths
--shapes celeba celeba-218x178 --repeats 5``.
"""
from __future__ import annotations

import argparse
import copy
import gc
import importlib
import importlib.metadata
import os
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

#: Peers in their default configuration (the ratio column); 'torchjd 1e-6' is TorchJD's MGDA run to a tolerance
#: of 1e-6 (its default 1e-3 leaves a KKT residual of about 1e-3; ours solves the QP exactly).
DEFAULT_PEERS = ('torchjd', 'libmtl')

SHAPES = {
    'pointpillars': (9, 2, 384, 160, 160),
    'celeba': (40, 8, 512, 8, 8),
    'celeba-218x178': (40, 8, 512, 27, 22),    # the stored images' conv map (--graddrop-paths only by default)
}
#: The shapes run when --shapes is not given (the stored-size CelebA stack, 390 MB, only with --graddrop-paths).
DEFAULT_SHAPES = ('pointpillars', 'celeba')


@dataclass
class Row:
    """One line of the result table."""

    method: str
    shape: str
    times_ms: dict[str, float | None] = field(default_factory=dict)   # impl -> best ms (None: not available)
    notes: list[str] = field(default_factory=list)


# -- peers -------------------------------------------------------------------------------------------------------
def load_torchjd(peers_path: str | None) -> types.ModuleType | None:
    """``torchjd.aggregation`` from ``peers_path`` (prepended to sys.path) or the environment; None if absent."""
    if peers_path:
        sys.path.insert(0, os.path.abspath(peers_path))
    try:
        return importlib.import_module('torchjd.aggregation')
    except ImportError as exc:
        print(f'[torchjd] not importable ({exc}); its column stays empty', file=sys.stderr)
        return None


def load_libmtl(location: str | None) -> dict[str, type] | None:
    """LibMTL's GradDrop / PCGrad / MGDA weighting classes, imported without ``LibMTL/__init__``.

    ``location`` is LibMTL's wheel, a folder holding the ``LibMTL`` package, or the package folder itself.
    The parent packages ``LibMTL`` and ``LibMTL.weighting`` are created empty with the right ``__path__``, so that
    only ``abstract_weighting`` and the three method modules execute (they import torch and numpy only).
    """
    if not location:
        return None
    location = os.path.abspath(location)
    if location.endswith('.whl'):
        if not os.path.isfile(location):
            raise FileNotFoundError(f'--libmtl: no such wheel {location}')
        pkg_dir = os.path.join(location, 'LibMTL')       # zipimport resolves paths inside the archive
    elif os.path.isdir(os.path.join(location, 'LibMTL')):
        pkg_dir = os.path.join(location, 'LibMTL')
    elif os.path.isfile(os.path.join(location, 'weighting', 'abstract_weighting.py')):
        pkg_dir = location
    else:
        raise FileNotFoundError(f'--libmtl: {location} is neither LibMTL\'s wheel nor a folder with LibMTL/weighting')
    for name, path in (('LibMTL', pkg_dir), ('LibMTL.weighting', os.path.join(pkg_dir, 'weighting'))):
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
    try:
        return {name: getattr(importlib.import_module(f'LibMTL.weighting.{name}'), name)
                for name in ('GradDrop', 'PCGrad', 'MGDA')}
    except ImportError as exc:
        print(f'[libmtl] weighting modules not importable from {pkg_dir} ({exc}); its column stays empty',
              file=sys.stderr)
        return None


def libmtl_flat_method(cls: type, grads_flat: Tensor) -> torch.nn.Module:
    """A LibMTL weighting (``rep_grad=False``) whose gradient hooks return ``grads_flat [T, D]``."""
    n_tasks, dim = grads_flat.shape

    class Harness(cls):  # type: ignore[misc, valid-type]
        def _compute_grad_dim(self) -> None:
            self.grad_dim = dim

        def _compute_grad(self, losses, mode, rep_grad=False):
            return grads_flat

        def _reset_grad(self, new_grads: Tensor) -> None:
            self.result = new_grads

    method = Harness()
    method.task_num, method.device, method.rep_grad = n_tasks, grads_flat.device, False
    return method


def libmtl_rep_method(cls: type, grads: Tensor, activation: Tensor) -> torch.nn.Module:
    """A LibMTL weighting on representation gradients (``rep_grad=True``) of ``activation [B, ...]``."""

    class Harness(cls):  # type: ignore[misc, valid-type]
        def _compute_grad(self, losses, mode, rep_grad=False):
            return grads

    method = Harness()
    method.task_num, method.device, method.rep_grad = grads.shape[0], grads.device, True
    method.rep = activation.detach().clone().requires_grad_(True)
    return method


# -- timing -------------------------------------------------------------------------------------------------------
def time_calls(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best (minimum) wall time in ms of ``repeats`` calls of every function, after one warm-up call each.

    The functions take turns call by call, so that a change in the machine's speed (a shared virtual machine's
    drifts within minutes) affects them alike; the minimum, not the mean, because other processes
    only ever add time."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: min(t) for name, t in times.items()}


def make_inputs(shape: tuple[int, ...], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients ``[T, *A]`` (Gaussian + 0.5 x a shared component), the activation ``A`` and task losses [T]."""
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(shape, generator=gen)
    grads.add_(torch.randn(shape[1:], generator=gen), alpha=0.5)
    activation = torch.randn(shape[1:], generator=gen)
    losses = torch.rand(shape[0], generator=gen) + 0.5
    return grads, activation, losses


def mgda_residual(gram: Tensor, alpha: Tensor) -> float:
    from graddrop_mtl.methods.mgda import kkt_residual
    gram = gram.double()
    m = gram / gram.diagonal().mean()
    return float(kkt_residual(m[None], alpha.double().reshape(1, -1))[0])


def torchjd_peer(factory: Callable[[], Callable], flat: Tensor) -> Callable[[], object] | None:
    """``aggregator(flat)`` for a TorchJD aggregator built by ``factory``; None when it cannot be built here (its
    optional solver, cvxpy or quadprog, is not installed)."""
    try:
        aggregator = factory()
    except ImportError as exc:
        print(f'[torchjd] {exc}', file=sys.stderr)
        return None
    return lambda: aggregator(flat)


#: Our settings where TorchJD's defaults differ from ours (TorchJD's are taken, so that both compute the same).
OURS_LIKE_TORCHJD: dict[str, dict] = {
    'CAGrad': dict(c=0.5, rescale=0),          # TorchJD's CAGrad has no rescaling
    'FairGrad': dict(alpha=1.0),
    'GradVac': dict(beta=0.5),
    'Krum': dict(n_byzantine=0),
    'TrimmedMean': dict(trim_number=1),
}
#: Rows that are not a registered method with the settings above.
VARIANTS: dict[str, dict] = {
    'GradDrop batch-separated': dict(type='GradDrop', batch_separated=True),
    'GradNorm+GradDrop': dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop')),
}
#: Rows first in the table (the paper's methods); then every other registered method by name.
FIRST_ROWS = ('GradDrop', 'GradDrop batch-separated', 'RandomGradDrop', 'PCGrad', 'MGDA')


def torchjd_factories(tjd, n_tasks: int) -> dict[str, Callable[[], Callable]]:
    """Registry name -> a factory of TorchJD's aggregator of the same method (called on the dense ``[T, D]``
    matrix), with the settings of :data:`OURS_LIKE_TORCHJD`. TorchJD's SDMGrad is a weighting of a T x T matrix
    (the product of two independent batches' Jacobians; here the one batch's Gram matrix), aggregated as
    ``w @ J``."""
    def weighted(weighting):
        return lambda m: weighting(m @ m.T) @ m

    return {
        'Sum': lambda: tjd.Sum(),
        'GradDrop': lambda: tjd.GradDrop(),
        'RandomGradDrop': lambda: tjd.GradDrop(f=lambda p: torch.full_like(p, 0.5)),
        'PCGrad': lambda: tjd.PCGrad(),
        'MGDA': lambda: tjd.MGDA(),
        'CAGrad': lambda: tjd.CAGrad(c=0.5),
        'NashMTL': lambda: tjd.NashMTL(n_tasks=n_tasks),
        'FairGrad': lambda: tjd.FairGrad(alpha=1.0),
        'IMTLG': lambda: tjd.IMTLG(),
        'AlignedMTL': lambda: tjd.AlignedMTL(),
        'UPGrad': lambda: tjd.UPGrad(),
        'GradVac': lambda: tjd.GradVac(beta=0.5),
        'DualProj': lambda: tjd.DualProj(),
        'ConFIG': lambda: tjd.ConFIG(),
        'Random': lambda: tjd.Random(),
        'Krum': lambda: tjd.Krum(n_byzantine=0),
        'TrimmedMean': lambda: tjd.TrimmedMean(trim_number=1),
        'ExcessMTL': lambda: tjd.ExcessMTL(),
        'SDMGrad': lambda: weighted(tjd.SDMGradWeighting()),
    }


def method_rows() -> list[tuple[str, dict]]:
    """``(label, our method's config)`` for every registered method (``Compose`` as GradNorm + GradDrop), with
    TorchJD's settings where they differ (:data:`OURS_LIKE_TORCHJD`), and the batch-separated GradDrop."""
    from graddrop_mtl.methods import METHODS
    rows = {}
    for name in sorted(METHODS):
        if name == 'Compose':
            rows['GradNorm+GradDrop'] = VARIANTS['GradNorm+GradDrop']
        else:
            rows[name] = dict(type=name, **OURS_LIKE_TORCHJD.get(name, {}))
    rows['GradDrop batch-separated'] = VARIANTS['GradDrop batch-separated']
    first = [label for label in FIRST_ROWS if label in rows]
    return [(label, rows[label]) for label in first + [label for label in rows if label not in first]]


def benchmark_shape(name: str, shape: tuple[int, ...], tjd, libmtl, repeats: int, check: bool,
                    methods: list[str] | None = None) -> list[Row]:
    from graddrop_mtl.methods import MGDA, build_method

    grads, activation, losses = make_inputs(shape, seed=0)
    flat = grads.reshape(shape[0], -1)
    label = f'{name} [{", ".join(map(str, shape))}]'
    rows: list[Row] = []
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)                                  # the peers draw from the global RNG

    def ours(method):
        method.collect_stats = False
        return lambda **kw: method.combine(grads, activation=activation, losses=losses, generator=generator, **kw)

    loss_list = [loss.clone() for loss in losses]

    def libmtl_rep_call(m):
        def run():
            m.rep.grad = None
            m.backward(loss_list, leak=0.0)
        return run

    factories = torchjd_factories(tjd, shape[0]) if tjd else {}
    libmtl_calls = {
        'GradDrop batch-separated': lambda: libmtl_rep_call(libmtl_rep_method(libmtl['GradDrop'], grads, activation)),
        'PCGrad': lambda: (lambda m=libmtl_flat_method(libmtl['PCGrad'], flat): m.backward(loss_list)),
        'MGDA': lambda: (lambda m=libmtl_flat_method(libmtl['MGDA'], flat): m.backward(loss_list, mgda_gn='none')),
    }
    specs: list[tuple[str, Callable, dict[str, Callable | None]]] = []
    for row_label, cfg in method_rows():
        if methods and row_label not in methods:
            continue
        method = build_method(copy.deepcopy(cfg))
        peers: dict[str, Callable | None] = {'torchjd': None, 'libmtl': None}
        if row_label in factories:
            peers['torchjd'] = torchjd_peer(factories[row_label], flat)
        if libmtl and row_label in libmtl_calls:
            peers['libmtl'] = libmtl_calls[row_label]()
        if row_label == 'MGDA' and tjd:
            peers['torchjd 1e-6'] = lambda a=tjd.MGDA(epsilon=1e-6, max_iters=10000): a(flat)
        if method.loss_only:
            # what the wrapper calls for a loss weighting: its weights from the losses, no per-task gradients
            specs.append((f'{row_label} (weigh_losses)', lambda m=method: m.weigh_losses(losses, generator), peers))
        else:
            specs.append((row_label, ours(method), peers))
    for method, ours_fn, peers in specs:
        row = Row(method, label)
        timed = time_calls({'ours': ours_fn, **{peer: fn for peer, fn in peers.items() if fn is not None}}, repeats)
        row.times_ms = {'ours': timed['ours'], **{peer: timed.get(peer) for peer in peers}}
        rows.append(row)
        print(f'  {method:26s} {label}: ' + ', '.join(f'{k} {v:.1f} ms' for k, v in row.times_ms.items()
                                                        if v is not None), file=sys.stderr, flush=True)
        gc.collect()

    if check:
        gram = flat.double() @ flat.double().T
        ours_mgda = MGDA()
        ours_mgda.combine(grads)
        report = {'ours': mgda_residual(gram, ours_mgda.task_weights)}
        if tjd:
            report['torchjd'] = mgda_residual(gram, tjd.MGDAWeighting()(flat @ flat.T))
            tight = tjd.MGDAWeighting(epsilon=1e-6, max_iters=10000)
            report['torchjd 1e-6'] = mgda_residual(gram, tight(flat @ flat.T))
        if libmtl:
            m = libmtl_flat_method(libmtl['MGDA'], flat)
            report['libmtl'] = mgda_residual(gram, torch.as_tensor(m.backward(loss_list, mgda_gn='none')))
        mgda_row = next((row for row in rows if row.method == 'MGDA'), None) or Row('MGDA', label)
        mgda_row.notes.append('KKT residual ' + ', '.join(f'{k} {v:.1e}' for k, v in report.items()))
    return rows


def format_table(rows: list[Row], peers: list[str]) -> str:
    header = ['method', 'shape', 'ours ms'] + [f'{p} ms' for p in peers] + ['ours / best peer (defaults)']
    lines = [header]
    for row in rows:
        peer_times = [row.times_ms.get(p) for p in peers]
        available = [t for p, t in zip(peers, peer_times) if t is not None and p in DEFAULT_PEERS]
        ratio = f'{row.times_ms["ours"] / min(available):.2f}' if available else 'n/a'
        lines.append([row.method, row.shape, f'{row.times_ms["ours"]:.1f}']
                     + [f'{t:.1f}' if t is not None else 'n/a' for t in peer_times] + [ratio])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ['| ' + ' | '.join(cell.ljust(w) for cell, w in zip(line, widths)) + ' |' for line in lines]
    out.insert(1, '|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    notes = [f'- {row.method}, {row.shape}: {note}' for row in rows for note in row.notes]
    return '\n'.join(out + ([''] + notes if notes else []))


def gram_table(shapes: dict[str, tuple[int, ...]], repeats: int) -> str:
    """``--gram``: our ``gram_matrix`` (batched chunk products) against one float32 ``mm`` (what TorchJD computes)
    and numpy's ``syrk`` on 2**14-column chunks, with each one's error relative to the largest float64 squared norm;
    and the time of our MGDA solver on the result."""
    import numpy as np

    from graddrop_mtl.methods.base import gram_matrix
    from graddrop_mtl.methods.mgda import min_norm_simplex

    def numpy_syrk(a: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
        out = np.zeros((a.shape[0], a.shape[0]))
        for start in range(0, a.shape[1], chunk):
            part = a[:, start:start + chunk]
            out += part @ part.T                     # numpy calls syrk for a product with its own transpose
        return out

    lines = ['| shape | ours ms | float32 mm ms | numpy syrk ms | ours err | mm err | syrk err | MGDA solver ms |',
             '|---|---|---|---|---|---|---|---|']
    for name, shape in shapes.items():
        grads, _, _ = make_inputs(shape, seed=0)
        flat = grads.reshape(shape[0], -1)
        fns = {'ours': lambda: gram_matrix(grads)[1][0], 'mm': lambda: (flat @ flat.T).double(),
               'syrk': lambda: torch.from_numpy(numpy_syrk(flat.numpy()))}
        gram = fns['ours']()
        fns['solver'] = lambda: min_norm_simplex(gram[None])
        times = time_calls(fns, repeats)
        ref = flat.double() @ flat.double().T
        scale = float(ref.diagonal().max())
        err = {k: float((fns[k]() - ref).abs().max()) / scale for k in ('ours', 'mm', 'syrk')}
        lines.append(f'| {name} [{", ".join(map(str, shape))}] | {times["ours"]:.1f} | {times["mm"]:.1f} '
                     f'| {times["syrk"]:.1f} | {err["ours"]:.1e} | {err["mm"]:.1e} | {err["syrk"]:.1e} '
                     f'| {times["solver"]:.2f} |')
    return '\n'.join(lines)


def graddrop_paths_table(shapes: dict[str, tuple[int, ...]], repeats: int) -> str:
    """``--graddrop-paths``: GradDrop's and Random GradDrop's ``combine`` with statistics, compiled pass against the
    PyTorch path; how many elements were decided otherwise (the paths add the tasks in different orders, so an
    element whose purity lies within rounding of its uniform can go either way, or to neither side at a tie), the
    largest difference elsewhere, and that of the logged kept fractions."""
    from graddrop_mtl.methods import GradDrop, RandomGradDrop, graddrop_kernel

    if not graddrop_kernel.available(torch.zeros(1)):
        return '(numba is not importable: only the PyTorch path exists)'
    lines = ['| method | shape | compiled ms | PyTorch ms | compiled / PyTorch | elements decided otherwise '
             '| max diff elsewhere | max kept-fraction diff |',
             '|---|---|---|---|---|---|---|---|']
    real = graddrop_kernel.available
    for name, shape in shapes.items():
        grads, _, _ = make_inputs(shape, seed=0)
        for method in (GradDrop(), RandomGradDrop()):
            def run(compiled: bool, method=method):
                graddrop_kernel.available = real if compiled else (lambda flat: False)
                try:
                    out = method.combine(grads, generator=torch.Generator().manual_seed(0))
                finally:
                    graddrop_kernel.available = real
                return out, method.last_stats()
            times = time_calls({'compiled': lambda: run(True), 'torch': lambda: run(False)}, repeats)
            (a, sa), (b, sb) = run(True), run(False)
            kept = max(abs(sa[k] - sb[k]) for k in sa if k.startswith('kept_frac'))
            diff = (a - b).abs()
            # another decision moves the result by a side's mass; rounding by ulps of the absolute mass
            other_side = diff > 1e-3 * grads.abs().sum(0)
            elsewhere = float(diff[~other_side].max()) if bool((~other_side).any()) else 0.0
            lines.append(f'| {type(method).__name__} | {name} [{", ".join(map(str, shape))}] '
                         f'| {times["compiled"]:.1f} | {times["torch"]:.1f} | {times["compiled"] / times["torch"]:.2f} '
                         f'| {int(other_side.sum())} of {a.numel()} | {elsewhere:.1e} | {kept:.1e} |')
        gc.collect()
    return '\n'.join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--shapes', nargs='+', default=list(DEFAULT_SHAPES), choices=list(SHAPES),
                        help='which activation shapes to run')
    parser.add_argument('--pp-size', type=int, default=160, choices=(80, 160),
                        help='BEV grid size of the PointPillars-like shape (80 quarters the memory)')
    parser.add_argument('--peers-path', default=None,
                        help='a folder (pip install --target) holding torchjd; prepended to sys.path')
    parser.add_argument('--libmtl', default=None,
                        help="LibMTL 1.1.5's wheel, or a folder holding the LibMTL package")
    parser.add_argument('--repeats', type=int, default=3, help='timed calls per cell (the best is reported)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch intra-op threads (default 1: steadier timings on a shared machine)')
    parser.add_argument('--methods', nargs='+', default=None,
                        help='only these rows (e.g. IMTLG UPGrad); default: every method')
    parser.add_argument('--check', action='store_true', help='also report the MGDA solutions\' KKT residuals')
    parser.add_argument('--gram', action='store_true',
                        help='only time the Gram matrix (ours, one float32 mm, numpy syrk) and our MGDA solver')
    parser.add_argument('--graddrop-paths', action='store_true',
                        help="only time GradDrop's compiled pass against its PyTorch path, statistics on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from graddrop_mtl.engine.memory import keep_freed_memory
    print(f'# freed memory kept for reuse (graddrop_mtl.engine.memory, for ours and the peers): {keep_freed_memory()}')
    shapes = {name: SHAPES[name] if name != 'pointpillars' else SHAPES[name][:3] + (args.pp_size, args.pp_size)
              for name in args.shapes}
    if args.gram:
        print(f'# Gram matrix wall time, best of {args.repeats}; torch {torch.__version__}, {args.threads} thread(s)'
              ' (numpy\'s BLAS on its own thread setting: OMP_NUM_THREADS=1 for one)')
        print(gram_table(shapes, args.repeats))
        return
    if args.graddrop_paths:
        print(f"# GradDrop combine() with statistics, wall time, best of {args.repeats}; torch {torch.__version__}, "
              f'{args.threads} thread(s)')
        print(graddrop_paths_table(shapes, args.repeats))
        return
    tjd = load_torchjd(args.peers_path)
    libmtl = load_libmtl(args.libmtl)
    peers = ['torchjd', 'libmtl', 'torchjd 1e-6']
    rows: list[Row] = []
    for name, shape in shapes.items():
        rows += benchmark_shape(name, shape, tjd, libmtl, args.repeats, args.check, args.methods)
    versions = [f'torch {torch.__version__}', f'{args.threads} thread(s)']
    if tjd is not None:
        versions.append(f'torchjd {importlib.metadata.version("torchjd")}')
    if libmtl is not None:
        versions.append('LibMTL 1.1.5 weighting modules')
    print(f'# combine() wall time, best of {args.repeats} (after 1 warm-up); ' + ', '.join(versions))
    print(format_table(rows, peers))


if __name__ == '__main__':
    main()
