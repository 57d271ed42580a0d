"""The vectorised R-hat, ESS and nested R-hat (zoo.inference.convergence) against ArviZ's own
per-coordinate functions: the same estimators, so agreement to 1e-8 (float round-off only),
ties and short chains included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from zoo.diagnostics import nested_rhat as nested_rhat_1d
from zoo.inference.convergence import average_ranks, ess_bulk, ess_tail, nested_rhat, rhat

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from arviz.stats.diagnostics import _ess_bulk, _ess_tail, _rhat_rank


def ar1(shape, rho, seed):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=shape)
    x = np.zeros(shape)
    for t in range(shape[1]):
        x[:, t] = (rho * x[:, t - 1] if t else 0.0) + e[:, t]
    return x


@pytest.mark.parametrize("shape,rho", [((128, 20, 6), 0.5), ((4, 500, 3), 0.9),
                                       ((16, 37, 4), 0.0), ((8, 100, 3), 0.99), ((2, 7, 2), 0.3)])
def test_matches_arviz(shape, rho):
    x = ar1(shape, rho, seed=shape[0])
    x[..., 0] = np.round(x[..., 0], 1)  # ties
    want = {f: np.array([g(x[..., i]) for i in range(shape[-1])])
            for f, g in (("bulk", _ess_bulk), ("tail", _ess_tail), ("rhat", _rhat_rank))}
    np.testing.assert_allclose(ess_bulk(x), want["bulk"], rtol=1e-8)
    np.testing.assert_allclose(ess_tail(x), want["tail"], rtol=1e-8)
    np.testing.assert_allclose(rhat(x), want["rhat"], rtol=1e-8)


def test_average_ranks_match_scipy():
    from scipy.stats import rankdata

    a = np.round(np.random.default_rng(0).normal(size=(60, 5)), 1)
    np.testing.assert_array_equal(average_ranks(a), rankdata(a, axis=0))


def test_nested_rhat_matches_the_per_coordinate_version():
    x = ar1((32, 40, 3), 0.5, seed=1) + np.repeat(np.random.default_rng(2).normal(0, 0.3, (4, 1, 3)), 8, 0)
    want = [nested_rhat_1d(x[..., i], 4) for i in range(3)]
    np.testing.assert_allclose(nested_rhat(x, 4), want, rtol=1e-12)
    assert max(want) > 1.01  # the superchain offsets are seen
