"""zoo.compare: Bayes factors, posterior model probabilities, Kass–Raftery wording, PSIS-LOO,
and the [evidence] table of recipes. Laplace fits and closed forms keep it fast."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo import run
from zoo.compare import bayes_factor, compare, estimate_all, kass_raftery
from zoo.errors import ZooError
from zoo.evidence import Evidence
from zoo.recipe import check_data, load_recipe

ROOT = Path(__file__).resolve().parent.parent
LAPLACE = {"adam_steps": 100, "lbfgs_steps": 20, "num_samples": 100}
# Closed form: log B(80, 80) − log B(30, 30) − (log B(51, 51) − log B(1, 1)).
LOG_BF_COIN = 1.591


def _coin(prior_a: float, prior_b: float, seed: int = 0):
    data = {**zoo.load_dataset("coin_flips", n=100, heads=50), "prior_a": prior_a, "prior_b": prior_b}
    return zoo.fit("beta_binomial", data, method="laplace", seed=seed, **LAPLACE)


@pytest.fixture(scope="module")
def coins():
    return {"beta_30_30": _coin(30.0, 30.0), "beta_1_1": _coin(1.0, 1.0)}


def test_log_bayes_factor_is_antisymmetric():
    a, b = Evidence(-3.25, 0.05, "bridge"), Evidence(-7.5, 0.12, "importance")
    ab, ba = bayes_factor(a, b), bayes_factor(b, a)
    assert ab[0] == -ba[0] and ab[0] == pytest.approx(4.25)
    assert ab[1] == ba[1] == pytest.approx(math.hypot(0.05, 0.12))


def test_beta_binomial_bayes_factor_matches_closed_form(coins):
    table = compare(coins, estimator="exact")
    assert list(table.index) == ["beta_30_30", "beta_1_1"]  # best first
    assert round(-table.loc["beta_1_1", "log_bf_vs_best"], 3) == LOG_BF_COIN
    assert table.loc["beta_1_1", "evidence_against"] == "substantial"  # BF = 4.9
    assert table.loc["beta_30_30", "log_bf_vs_best"] == 0.0


def test_same_model_two_seeds_has_log_bf_zero_within_4_mcse():
    # Same model and data, independent importance draws: the only difference is Monte Carlo
    # error, so |log BF| must be within 4 of its MCSE (two-sided tail probability < 1e-4).
    a = _coin(30.0, 30.0, seed=0).log_evidence("importance", seed=0, num_draws=2000)
    b = _coin(30.0, 30.0, seed=1).log_evidence("importance", seed=1, num_draws=2000)
    log_bf, mcse = bayes_factor(a, b)
    assert mcse > 0 and log_bf != 0.0  # the draws differ, so this tests something
    assert abs(log_bf) <= 4 * mcse


def test_posterior_probabilities_follow_bayes_rule():
    ev = {"a": Evidence(0.0, 0.0, "exact"), "b": Evidence(-1.0, 0.0, "exact"),
          "c": Evidence(-2.0, 0.0, "exact")}
    uniform = compare(ev)
    assert uniform["posterior_prob"].sum() == pytest.approx(1.0)
    assert uniform["prior_prob"].tolist() == pytest.approx([1 / 3] * 3)
    assert uniform.loc["a", "posterior_prob"] / uniform.loc["b", "posterior_prob"] == pytest.approx(math.e)
    prior = {"a": 0.1, "b": 0.3, "c": 0.6}
    shifted = compare(ev, prior=prior)
    expected = np.array([prior[k] * math.exp(ev[k].value) for k in "abc"])
    expected /= expected.sum()
    assert shifted.loc[list("abc"), "posterior_prob"].tolist() == pytest.approx(expected.tolist())
    assert shifted.loc["c", "posterior_prob"] > uniform.loc["c", "posterior_prob"]
    # The ordering is by evidence, not by posterior probability: the prior is stated, not hidden.
    assert list(shifted.index) == ["a", "b", "c"]


@pytest.mark.parametrize("bf, words", [
    (1.0, "not worth more than a bare mention"), (3.1999, "not worth more than a bare mention"),
    (3.2, "substantial"), (9.999, "substantial"), (10.0, "strong"), (100.0, "strong"),
    (100.01, "decisive"), (1e6, "decisive")])
def test_kass_raftery_boundaries(bf, words):
    assert kass_raftery(math.log(bf)) == words
    assert kass_raftery(-math.log(bf)) == words  # the words do not depend on the direction


@pytest.mark.parametrize("prior, match", [
    ({"a": 0.5, "b": 0.6}, "sum to 1"),
    ({"a": 1.2, "b": -0.2}, "positive"),
    ({"a": 0.0, "b": 1.0}, "positive"),
    ({"a": 1.0}, "missing"),
    ({"a": 0.5, "b": 0.25, "z": 0.25}, "unknown"),
])
def test_bad_prior_is_a_zoo_error(prior, match):
    ev = {"a": Evidence(0.0, 0.0, "exact"), "b": Evidence(-1.0, 0.0, "exact")}
    with pytest.raises(ZooError, match=match):
        compare(ev, prior=prior)


def test_bad_arguments():
    ev = {"a": Evidence(0.0, 0.0, "exact")}
    with pytest.raises(ZooError, match="did you mean 'loo'"):
        compare(ev, by="looo")
    with pytest.raises(ZooError, match="needs fits"):
        compare(ev, by="loo")


def test_loo_returns_arviz_columns(coins):
    table = compare(coins, by="loo")
    for col in ["elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning"]:
        assert col in table.columns
    assert set(table.index) == set(coins)
    assert table["weight"].sum() == pytest.approx(1.0)


def test_list_of_fits_is_labelled_by_model_name(coins):
    fit = coins["beta_30_30"]
    assert list(compare([fit], estimator="exact").index) == ["beta_binomial"]
    with pytest.raises(ZooError, match="appears twice"):
        compare(list(coins.values()))


def test_pooling_models_closed_forms_agree_with_laplace():
    # Both models are linear-Gaussian, so the Laplace evidence is exact: an independent check
    # of the hand-written closed forms (MVN for complete pooling, a product for no pooling).
    data = zoo.load_dataset("eight_schools")
    for name in ["eight_schools_complete_pooling", "eight_schools_no_pooling"]:
        fit = zoo.fit(name, data, method="laplace", **LAPLACE)
        assert fit.log_evidence("exact").value == pytest.approx(fit.log_evidence("laplace").value, abs=1e-6)


def test_estimate_all_records_n_a_instead_of_raising(coins):
    rows = estimate_all("coin", {"laplace": coins["beta_30_30"], "nuts": "Hessian blew up"},
                        ["exact", "bridge", "importance"])
    by_name = {r.name: r for r in rows}
    assert by_name["exact"].evidence is not None
    assert by_name["bridge"].evidence is None and "nuts fit failed: Hessian" in by_name["bridge"].error
    assert by_name["importance (laplace)"].evidence is not None
    delta = zoo.fit("beta_binomial", coins["beta_1_1"].data, method="svi", guide="delta", num_steps=50)
    (row,) = estimate_all("coin", {"svi": delta}, ["importance"])
    assert row.evidence is None and "delta" in row.error  # the estimator's ZooError, recorded


@pytest.mark.parametrize("name", ["beta_binomial_bayes_factor", "eight_schools_comparison",
                                  "polynomial_degree"])
def test_comparison_recipes_check(name):
    for smoke in (False, True):
        recipe = load_recipe(name, smoke=smoke)
        check_data(recipe)
        assert recipe.evidence and recipe.evidence["estimators"]
        if "bridge" in recipe.evidence["estimators"] and "nuts" in recipe.methods:
            assert recipe.resolved["nuts"]["num_samples"] >= 400  # or bridge is n/a


def test_smoke_run_writes_evidence_and_comparison(tmp_path):
    assert run.main(["beta_binomial_bayes_factor", "--smoke", "--quiet", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "beta_binomial_bayes_factor-smoke"
    csv = (folder / "evidence.csv").read_text().splitlines()
    assert csv[0] == "model,estimator,fit,log_evidence,mcse,note"
    assert "beta_1_1,exact,nuts,-4.6151,0," in csv and len(csv) == 1 + 2 * 5
    assert (folder / "figures" / "bayes_factors.png").is_file()
    text = (folder / "report.md").read_text()
    assert "## Model comparison" in text and "| beta_1_1 | -4.615 | 0 | exact |" in text
    assert "-1.591" in text and "elpd_loo" in text and "*prior* predictive" in text
    assert "figures/bayes_factors.png" in text
