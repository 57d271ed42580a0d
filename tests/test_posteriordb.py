"""NUTS against posteriordb's reference posterior for eight schools (non-centered)."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from zoo.datasets import posteriordb_reference

from conftest import posteriordb_dir

POSTERIOR = "eight_schools-eight_schools_noncentered"


@pytest.mark.slow
def test_nuts_matches_posteriordb_eight_schools_noncentered():
    # Means: within 4 combined MCSE (ours + the reference's), false-alarm rate ~6e-5 per
    # parameter. Sds: within 10% (posteriordb's own criterion); with ~2000+ effective draws the
    # sd's relative Monte Carlo error is ~1.6%, so 10% is > 6 of its standard errors.
    root = posteriordb_dir(POSTERIOR).parent
    data = zoo.load_dataset("posteriordb", posterior=POSTERIOR, root=str(root))
    fit = zoo.fit("eight_schools_noncentered", data, method="nuts", seed=0,
                  num_warmup=500, num_samples=1000, num_chains=4, target_accept=0.9)
    table = zoo.diagnostics.compare_reference(fit, posteriordb_reference(POSTERIOR, root=str(root)))
    assert set(table["param"]) >= {"mu", "tau", "theta[0]", "theta[7]"}
    assert (table["z"].abs() < 4).all(), table
    assert (np.abs(table["sd_ratio"] - 1) < 0.10).all(), table
    assert fit.converged, fit.checks()
