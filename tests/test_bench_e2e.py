"""``python -m zoo.bench e2e`` at quick size: the worker protocol (a fresh process per
contender), the summary from one ArviZ call, and the report. Speed is never asserted here."""

from __future__ import annotations

import numpy as np

from zoo.bench import e2e
from zoo.bench.e2e_models import MODELS, stan_data


def test_quick_run_reports_the_zoo_contender():
    result = e2e.run(quick=True)
    row = result.data["medians"]["zoo/eight_schools"]
    assert "error" not in row, row
    assert row["ess"] > 0 and row["wall"] > 0 and row["warm_wall"] > 0
    assert row["method"] == ["chees"] and row["fallback"] == [None]
    assert "End-to-end ESS per second" in result.markdown


def test_summary_is_min_of_bulk_and_tail_over_every_coordinate():
    rng = np.random.default_rng(0)
    draws = {"a": rng.normal(size=(4, 200)), "b": rng.normal(size=(4, 200, 3))}
    draws["b"][..., 2] = np.cumsum(draws["b"][..., 2], axis=1)  # a random walk: tiny ESS
    s = e2e.summarise(draws)
    assert s["ess"] == min(s["ess_bulk"], s["ess_tail"]) < 50
    assert set(s["coords"]) == {"a", "b[0]", "b[1]", "b[2]"}


def test_every_model_has_data_for_every_language():
    for name, m in MODELS.items():
        data = m.data()
        assert callable(m.pyro) and callable(m.numpyro) and "model" in m.stan
        sd = stan_data(name, data)
        assert all(not isinstance(v, np.ndarray) for v in sd.values())  # JSON-ready for pystan
    assert MODELS["radon"].data()["g"].dtype.kind == "i"  # an integer index, as users have it
