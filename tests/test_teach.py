"""The teaching walk-throughs (zoo.teach): each smoke run writes a complete report, and the
computations the reports teach are right against closed forms and hand-made cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from zoo import run
from zoo.fit import default_dtype
from zoo.teach import beta_binomial as bb
from zoo.teach import bnn_1d, eight_schools
from zoo.teach import linear_regression as lr
from zoo.uncertainty import RegressionPredictive

SECTIONS = {
    "beta_binomial": ["The model", "Prior predictive", "The data", "Bayes' theorem on a grid",
                      "Sequential updating", "The same posterior by MCMC",
                      "Posterior predictive checks", "What the data changed"],
    "linear_regression": ["The model", "Prior predictive", "The data", "Posterior lines as the points arrive",
                          "Exact posterior versus the zoo's MCMC", "Posterior predictive bands",
                          "What the data changed"],
    "eight_schools": ["The data", "Three models", "Prior predictive", "Fitting the three models",
                      "Shrinkage", "Posterior predictive checks", "The funnel", "What the data changed"],
    "bnn_1d": ["The model", "Prior predictive", "The data", "Bayes by backprop",
               "Aleatoric and epistemic uncertainty", "Checks on fresh data", "What the data changed"],
}
FIGURES = {
    "beta_binomial": ["prior_predictive", "data", "bayes_theorem", "sequential", "mcmc_vs_exact",
                      "posterior_predictive"],
    "linear_regression": ["prior_predictive", "posterior_lines", "mcmc_vs_exact", "predictive_bands"],
    "eight_schools": ["data", "prior_predictive", "shrinkage", "posterior_predictive", "funnel"],
    "bnn_1d": ["prior_functions", "elbo", "predictive"],
}
NUMBERS = {  # a headline number each report must have computed
    "beta_binomial": "kl_posterior_prior_nats", "linear_regression": "kl_posterior_prior_nats",
    "eight_schools": "divergences_centred", "bnn_1d": "bayes_by_backprop_gap_ratio",
}


@pytest.mark.parametrize("name", list(SECTIONS))
def test_smoke_run_writes_the_report_with_its_sections_and_figures(name, tmp_path, capsys):
    assert run.main(["teach", name, "--smoke", "--out", str(tmp_path), "--quiet"]) == 0
    folder = tmp_path / f"teach_{name}-smoke"
    text = (folder / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    for section in SECTIONS[name] + ["How this report was made"]:
        assert any(section in h for h in headings), (section, headings)
    assert [h.split(". ", 1)[0] for h in headings] == [f"## {i + 1}" for i in range(len(headings))]
    for figure in FIGURES[name]:
        assert (folder / "figures" / f"{figure}.png").stat().st_size > 1000, figure
        assert f"(figures/{figure}.png)" in text, figure
    assert "versions: python" in text and "seed: 0" in text and "settings:" in text
    numbers = json.loads((folder / "numbers.json").read_text())
    assert math.isfinite(float(numbers[NUMBERS[name]]))
    assert not list(tmp_path.glob(".*tmp*")), "the atomic temp folder was left behind"


# -- beta-binomial: the three routes to the posterior agree ------------------------------------
def test_sequential_update_equals_the_all_at_once_posterior_exactly():
    from zoo.models.conjugate import beta_binomial_exact_log_evidence, beta_binomial_exact_posterior

    rng = np.random.default_rng(3)
    for a, b in [(2.0, 2.0), (0.5, 3.0), (30.0, 30.0)]:
        n = rng.integers(1, 40, size=6)
        y = rng.binomial(n, 0.3)
        steps = bb.sequential_update(n, y, a, b)
        with default_dtype(torch.float64):  # the zoo's closed forms use the default dtype
            exact = beta_binomial_exact_posterior(torch.as_tensor(n, dtype=torch.float64),
                                                  torch.as_tensor(y, dtype=torch.float64), a, b)["p"]
            log_ev = beta_binomial_exact_log_evidence(torch.as_tensor(n, dtype=torch.float64),
                                                      torch.as_tensor(y, dtype=torch.float64), a, b)
        # integer counts added to the prior: the same floats, so exact equality
        assert (steps[-1].a, steps[-1].b) == (float(exact.concentration1), float(exact.concentration0))
        # chain rule: the batches' predictive probabilities multiply to the evidence
        assert abs(sum(s.log_predictive for s in steps) - log_ev) < 1e-9
        # the sequential grid update ends on the all-at-once grid posterior (rounding only)
        g = bb.grid_posterior(n, y, a, b, 500)
        assert np.max(np.abs(bb.sequential_grid(n, y, a, b, 500) - g.posterior)) < 1e-9 * g.posterior.max()


def test_grid_posterior_and_evidence_match_the_closed_form():
    from zoo.models.conjugate import beta_binomial_exact_log_evidence
    from scipy import stats

    n, y, a, b = np.array([5, 10, 15, 20]), np.array([4, 4, 12, 15]), 2.0, 2.0
    g = bb.grid_posterior(n, y, a, b, 2000)
    exact = stats.beta.pdf(g.p, a + y.sum(), b + (n - y).sum())
    # The midpoint rule errs by O(Δp²) = O(2.5e-7) times the density's curvature scale; a
    # smooth density vanishing at both ends does far better (Euler-Maclaurin). 1e-6 of the
    # peak is a loose bound that a wrong likelihood, prior or normaliser misses by orders.
    assert np.max(np.abs(g.posterior - exact)) < 1e-6 * exact.max()
    with default_dtype(torch.float64):
        log_ev = beta_binomial_exact_log_evidence(torch.as_tensor(n, dtype=torch.float64),
                                                  torch.as_tensor(y, dtype=torch.float64), a, b)
        log_ev_u = beta_binomial_exact_log_evidence(torch.tensor([3.0], dtype=torch.float64),
                                                    torch.tensor([0.0], dtype=torch.float64), 0.5, 0.5)
    assert abs(math.log(g.evidence) - log_ev) < 1e-6
    # a U-shaped prior (infinite density at 0 and 1): midpoints keep it finite, 2% accuracy
    g = bb.grid_posterior(np.array([3]), np.array([0]), 0.5, 0.5, 4000)
    assert abs(np.sum(g.posterior) / 4000 - 1) < 1e-12
    assert abs(math.log(g.evidence) - log_ev_u) < 0.02


# -- linear regression: the exact KL between NIG distributions -----------------------------------
def test_nig_kl_matches_monte_carlo():
    import torch.distributions as D

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 5)
    y = 0.3 * x + 0.1 * rng.standard_normal(5)
    post = lr.nig_posterior(lr.design(x), torch.as_tensor(y), 2.0, 0.1, 2.0)
    prior = lr.nig_prior(2.0, 0.1, 2.0)
    beta, sigma2 = (torch.as_tensor(v) for v in lr.nig_draws(post, 40000, rng))

    def log_density(p):  # log N(β; m, σ² V) + log InvGamma(σ²; a, b), written out
        r = beta - p.loc
        quad = (r @ torch.linalg.inv(p.cov) * r).sum(-1) / sigma2
        normal = -0.5 * (quad + 2 * torch.log(2 * math.pi * sigma2) + torch.logdet(p.cov))
        inv_gamma = D.Gamma(p.concentration, p.rate).log_prob(1 / sigma2) - 2 * torch.log(sigma2)
        return normal + inv_gamma

    d = (log_density(post) - log_density(prior)).numpy()
    # KL = E_q[log q - log p]; 4 Monte Carlo standard errors of the mean of 40,000 iid terms
    assert abs(d.mean() - lr.nig_kl(post, prior)) < 4 * d.std() / math.sqrt(d.size)
    assert lr.nig_kl(prior, prior) == pytest.approx(0.0, abs=1e-12)


# -- eight schools: the shrinkage factor ---------------------------------------------------------
def test_conditional_shrinkage_averages_sigma2_over_sigma2_plus_tau2():
    sigma, tau = np.array([10.0, 20.0]), np.array([0.0, 10.0, 20.0])
    expected = [np.mean([1.0, 0.5, 0.2]), np.mean([1.0, 0.8, 0.5])]
    assert np.allclose(eight_schools.conditional_shrinkage(sigma, tau), expected, rtol=0, atol=1e-15)


# -- BNN: the epistemic sd by region ------------------------------------------------------------
def test_epistemic_sd_is_measured_per_region_on_a_hand_made_predictive():
    x_train = np.concatenate([np.linspace(-3, -1, 41), np.linspace(1, 3, 41)])  # dense clusters
    grid = np.linspace(-6, 6, 121)
    masks = bnn_1d.regions(grid, x_train)
    assert (np.abs(grid[masks["in the gap"]]) < 0.5 + 1e-9).all() and masks["in the gap"].sum() >= 9
    assert (np.abs(grid[masks["beyond the ends"]]) > 4).all() and masks["beyond the ends"].sum() == 40
    assert (np.abs(np.abs(grid[masks["at the data"]]) - 2) <= 1 + bnn_1d.NEAR + 1e-9).all()
    # Networks that agree at the data and disagree in proportion to the distance from it:
    # mean_s(x) = c_s d(x) with c = ±1, so the epistemic sd is exactly d(x).
    d = np.abs(grid[:, None] - x_train[None, :]).min(1)
    c = torch.tensor([-1.0, 1.0], dtype=torch.float64)[:, None]
    pred = RegressionPredictive(c * torch.as_tensor(d), torch.full((2, grid.size), 0.01, dtype=torch.float64))
    out = bnn_1d.epistemic_by_region(grid, x_train, pred)
    assert out["at the data"] == pytest.approx(d[masks["at the data"]].mean(), abs=1e-12)
    assert out["in the gap"] == pytest.approx(d[masks["in the gap"]].mean(), abs=1e-12)
    assert out["at the data"] < 0.05 < 0.5 < out["in the gap"] < out["beyond the ends"]


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_walkthrough_is_a_did_you_mean_error_with_status_2(tmp_path, capsys):
    assert run.main(["teach", "beta_binomal", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown walk-through 'beta_binomal'" in err and "did you mean 'beta_binomial'" in err
    bad = tmp_path / "teach_bad.toml"
    bad.write_text('[recipe]\nname = "teach_bad"\n[teach]\nwalkthrough = "eight_school"\n')
    assert run.main([str(bad), "--out", str(tmp_path)]) == 2
    assert "did you mean 'eight_schools'" in capsys.readouterr().err
    assert not any(p.name.startswith("teach_") and p.is_dir() for p in tmp_path.iterdir())


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    args = ["teach_beta_binomial", "--check", "--out", str(tmp_path)]
    assert run.main(args + ["--set", "teach.grid_pointz=3"]) == 2
    assert "did you mean 'grid_points'" in capsys.readouterr().err
    assert run.main(args + ["--set", "teach.batches=[5, 0]"]) == 2
    assert "teach.batches" in capsys.readouterr().err
    assert run.main(args + ["--set", "teach.method='svi'"]) == 2
    assert "teach.method must be one of chees, nuts" in capsys.readouterr().err
    assert run.main(args + ["--set", "teach.inference={num_warmupp=3}"]) == 2
    assert "num_warmup" in capsys.readouterr().err
    assert run.main(args) == 0 and "ok: recipe is valid" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())


def test_every_walkthrough_has_a_valid_recipe_whose_first_line_runs_it(capsys):
    from zoo.recipe import find_recipe, read_toml
    from zoo.teach import WALKTHROUGHS

    for name in WALKTHROUGHS:
        path = find_recipe(f"teach_{name}")
        assert path.read_text().splitlines()[0] == f"# python -m zoo.run teach {name}"
        assert read_toml(path)["teach"]["walkthrough"] == name
        for smoke in ([], ["--smoke"]):
            assert run.main(["teach", name, "--check", *smoke]) == 0
    assert capsys.readouterr().out.count("ok: recipe is valid") == 2 * len(WALKTHROUGHS)
