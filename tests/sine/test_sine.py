"""The sine experiment: replicas are independent problems, the landscape helpers, the metric."""
import math

import numpy as np
import pytest
import torch

from graddrop_mtl.engine import MultiTaskOptimWrapper
from graddrop_mtl.models.sine import PAPER_SINES, SineMTLModel, global_minimum, sine_frequencies, total_loss_np

METHODS = [dict(type='Sum'), dict(type='GradDrop'), dict(type='GradDrop', k=0.25), dict(type='RandomGradDrop'),
           dict(type='PCGrad'), dict(type='PCGrad', iterative=True), dict(type='MGDA'),
           dict(type='MGDA', normalization='loss'), dict(type='GradNorm'),
           dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop'))]


def trajectory(method, replica_ids, steps=40):
    model = SineMTLModel(num_replicas=len(replica_ids), replica_ids=replica_ids, init_seed=7)
    wrapper = MultiTaskOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05), method=method, shared='trunk',
                                    problem_dims=1, problem_rng=True, problem_ids=replica_ids, seed=11,
                                    grad_mode='loop')
    data = dict(inputs=[torch.zeros(())])
    for _ in range(steps):
        model.train_step(data, wrapper)
    return torch.stack(model.trajectory)       # [steps, R]


@pytest.mark.parametrize('method', METHODS, ids=lambda m: str(m))
def test_replica_alone_reproduces_its_trajectory(method):
    ids = [0, 1, 2, 3, 4, 5]
    together = trajectory(method, ids)
    assert together[0].std() > 0              # replicas really differ
    for k in (0, 3, 5):
        alone = trajectory(method, [ids[k]])
        torch.testing.assert_close(alone[:, 0], together[:, k], rtol=0, atol=0)


def test_methods_differ_on_the_sine():
    """The methods are not all the same update (a sanity check of the wiring)."""
    ids = list(range(8))
    finals = {m['type'] + str(m.get('iterative', '')): trajectory(m, ids)[-1] for m in METHODS[:7]}
    assert not torch.equal(finals['Sum'], finals['GradDrop'])
    assert not torch.equal(finals['PCGrad'], finals['PCGradTrue'])


def test_initial_weights_are_per_replica_and_in_range():
    model = SineMTLModel(num_replicas=50, init_seed=3)
    w = model.trunk().detach()
    assert (w >= 0).all() and (w < 4 * math.pi).all()
    alone = SineMTLModel(num_replicas=1, replica_ids=[17], init_seed=3).trunk().detach()
    assert alone.item() == w[17].item()


def test_total_loss_is_4pi_periodic_and_global_minimum_is_the_minimum():
    w = np.linspace(0, 4 * math.pi, 1000)
    freqs, phases = [a for a, _ in PAPER_SINES], [b for _, b in PAPER_SINES]
    np.testing.assert_allclose(total_loss_np(w, freqs, phases), total_loss_np(w + 4 * math.pi, freqs, phases),
                               atol=1e-9)
    w_star, l_star = global_minimum(freqs, phases, 0.0, 4 * math.pi)
    dense = total_loss_np(np.linspace(0, 4 * math.pi, 2_000_001), freqs, phases)
    assert l_star <= dense.min() + 1e-12
    assert abs(total_loss_np(w_star, freqs, phases) - l_star) < 1e-12


def test_overlap_moves_frequencies_to_their_mean():
    freqs = [a for a, _ in PAPER_SINES]
    assert sine_frequencies(freqs, 0.0) == freqs
    np.testing.assert_allclose(sine_frequencies(freqs, 1.0), [np.mean(freqs)] * 5)
    with pytest.raises(ValueError, match='overlap must lie in'):
        sine_frequencies(freqs, 1.5)


def test_metric_counts_replicas_at_the_global_minimum():
    from graddrop_mtl.evaluation.sine_metric import SineMetric
    metric = SineMetric()
    metric.process(None, [dict(total_loss=np.array([metric.l_star, metric.l_star + 0.5, metric.l_star + 1e-4]))])
    out = metric.compute_metrics(metric.results)
    assert out['at_global_min'] == pytest.approx(2 / 3)
    assert out['global_min'] == pytest.approx(metric.l_star)
