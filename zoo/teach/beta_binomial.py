"""Walk-through: Bayes' theorem on a coin, with the zoo's ``beta_binomial`` model.

    p ~ Beta(a, b);   y_k | p ~ Binomial(n_k, p),  k = 1..K   (K batches of tosses)

The posterior is computed three ways that must agree: on a grid (prior × likelihood, divided
by the evidence p(y) = ∫ prior × likelihood dp, by the midpoint rule), in closed form
(Beta(a + Σy, b + Σ(n − y))), and by the zoo's MCMC. Sequential updating feeds each batch's
posterior in as the next prior; by the chain rule p(y) = Π_k p(y_k | y_<k), so the evidence
comes out of the same loop.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import numpy as np
import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from ..errors import ZooError
from .document import Document, fmt, plt
from .shared import checks_text, fit_table, mcmc_fit, ppc_pvalue, validate_inference

TITLE = "Bayes' theorem on a coin: the Beta-Binomial model"
INTRO = """
A coin with unknown probability p of heads is tossed in batches. This walk-through applies
Bayes' theorem to it four ways: by hand on a grid, in closed form, one batch at a time, and by
the zoo's MCMC; it then checks the fitted model against the data and measures how much the
tosses taught us about p. Every number and figure below was computed when this report was
built; the text around them was written once.
"""

DEFAULTS: dict[str, Any] = {
    "prior_a": 2.0,  # Beta(2, 2): a mild belief that the coin is roughly fair
    "prior_b": 2.0,
    "true_p": 0.7,  # the simulated coin's real heads probability (the model does not know it)
    "batches": [5, 10, 15, 20],  # tosses per batch, observed one batch after the other
    "grid_points": 2000,
    "prior_draws": 4000,
    "method": "chees",
    "inference": {"num_warmup": 400, "num_samples": 100, "num_chains": 64},
}


def validate(settings: Mapping[str, Any], where: str) -> None:
    s = settings
    if not (s["prior_a"] > 0 and s["prior_b"] > 0):
        raise ZooError(f"{where}: teach: prior_a and prior_b must be > 0")
    if not 0 <= s["true_p"] <= 1:
        raise ZooError(f"{where}: teach.true_p must lie in [0, 1], got {s['true_p']}")
    if not s["batches"] or min(s["batches"]) < 1:
        raise ZooError(f"{where}: teach.batches must be a non-empty list of counts >= 1")
    for key in ("grid_points", "prior_draws"):
        if s[key] < 10:
            raise ZooError(f"{where}: teach.{key} must be >= 10, got {s[key]}")
    validate_inference(s, where)


# -- the computations (tested on their own) -------------------------------------------------
class Grid(NamedTuple):
    p: np.ndarray  # midpoints of G equal cells of [0, 1]
    prior: np.ndarray  # p(p) at each point
    likelihood: np.ndarray  # p(y | p)
    evidence: float  # p(y) = Σ prior × likelihood × Δp
    posterior: np.ndarray  # prior × likelihood / p(y)


def grid_posterior(n: np.ndarray, y: np.ndarray, a: float, b: float, points: int) -> Grid:
    """Bayes' theorem by brute force: p(p | y) = p(y | p) p(p) / p(y) on a midpoint grid.

    Midpoints avoid p = 0 and 1, where a Beta density with a < 1 or b < 1 is infinite; the
    midpoint rule's error on a smooth density is O(Δp²)."""
    p = (np.arange(points) + 0.5) / points
    prior = np.exp(dist.Beta(a, b).log_prob(torch.as_tensor(p)).numpy())
    log_lik = dist.Binomial(torch.as_tensor(n, dtype=torch.float64).unsqueeze(-1),
                            probs=torch.as_tensor(p)).log_prob(
        torch.as_tensor(y, dtype=torch.float64).unsqueeze(-1)).sum(0).numpy()
    likelihood = np.exp(log_lik)
    evidence = float(np.sum(prior * likelihood) / points)
    return Grid(p, prior, likelihood, evidence, prior * likelihood / evidence)


class Update(NamedTuple):
    a: float  # Beta(a, b) after this batch
    b: float
    log_predictive: float  # log p(y_k | y_<k): the batch's probability under the previous belief


def sequential_update(n: np.ndarray, y: np.ndarray, a: float, b: float) -> list[Update]:
    """Batch by batch: the posterior Beta(a', b') after a batch is the prior for the next.
    Each batch's predictive under the current Beta is BetaBinomial(n_k, a, b)."""
    out = []
    for n_k, y_k in zip(n, y):
        f64 = {"dtype": torch.float64}
        lp = float(dist.BetaBinomial(torch.tensor(a, **f64), torch.tensor(b, **f64),
                                     total_count=torch.tensor(float(n_k), **f64))
                   .log_prob(torch.tensor(float(y_k), **f64)))
        a, b = a + float(y_k), b + float(n_k - y_k)
        out.append(Update(a, b, lp))
    return out


def sequential_grid(n: np.ndarray, y: np.ndarray, a: float, b: float, points: int) -> np.ndarray:
    """The same sequential update on the grid: multiply in one batch's likelihood, renormalise."""
    post = grid_posterior(n[:0], y[:0], a, b, points).prior
    for n_k, y_k in zip(n, y):
        g = grid_posterior(np.array([n_k]), np.array([y_k]), a, b, points)
        post = post * g.likelihood
        post = post / (post.sum() / points)
    return post


def simulate_tosses(batches: list[int], true_p: float, seed: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tosses (1 = heads) of a coin with P(heads) = true_p, and the batch sizes and heads."""
    tosses = (np.random.default_rng(seed).random(sum(batches)) < true_p).astype(int)
    edges = np.cumsum([0] + list(batches))
    heads = np.array([tosses[i:j].sum() for i, j in zip(edges[:-1], edges[1:])])
    return tosses, np.asarray(batches), heads


# -- the report ---------------------------------------------------------------------------------
def build(doc: Document, s: Mapping[str, Any], seed: int) -> None:
    from ..models.conjugate import beta_binomial_exact_log_evidence, beta_binomial_exact_posterior

    a, b = s["prior_a"], s["prior_b"]
    tosses, n, y = simulate_tosses(s["batches"], s["true_p"], seed)
    N, H = int(n.sum()), int(y.sum())
    prior = dist.Beta(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    exact = beta_binomial_exact_posterior(torch.as_tensor(n, dtype=torch.float64),
                                          torch.as_tensor(y, dtype=torch.float64), a, b)["p"]

    doc.heading("The model")
    doc.text("""
        The unknown is p, the probability that the coin shows heads. Before seeing any toss we
        describe what we believe about p by a Beta distribution (the *prior*); given p, the
        number of heads in a batch of n tosses is Binomial (the *likelihood*):
        """)
    doc.math(r"p \sim \mathrm{Beta}(a, b), \qquad y_k \mid p \sim \mathrm{Binomial}(n_k, p),"
             r"\quad k = 1, \dots, K",
             r"p(p \mid y) = \frac{p(y \mid p)\, p(p)}{p(y)}, \qquad "
             r"p(y) = \int_0^1 p(y \mid p)\, p(p)\, dp")
    doc.text(f"""
        Here a = {fmt(a)}, b = {fmt(b)}: the prior mean is a/(a+b) = {fmt(a / (a + b))} and the
        prior sd is {doc.number('prior_sd', float(prior.stddev))}. The denominator p(y), the
        *evidence*, does not depend on p: it is the number that makes the posterior integrate
        to one, and also the probability the model gave the data before seeing them.
        """)

    doc.heading("Prior predictive: what the model expects before any data")
    rng = np.random.default_rng(seed + 1)
    p_prior = rng.beta(a, b, size=s["prior_draws"])
    heads_prior = rng.binomial(N, p_prior)
    k = np.arange(N + 1)
    pmf = np.exp(dist.BetaBinomial(prior.concentration1, prior.concentration0, total_count=float(N))
                 .log_prob(torch.as_tensor(k, dtype=torch.float64)).numpy())
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    xs = np.linspace(0.001, 0.999, 400)
    ax[0].plot(xs, np.exp(prior.log_prob(torch.as_tensor(xs)).numpy()), color="C0")
    ax[0].hist(p_prior, bins=40, density=True, color="C0", alpha=0.3, label=f"{len(p_prior)} draws")
    ax[0].set(xlabel="p", title=f"prior Beta({fmt(a)}, {fmt(b)})")
    ax[0].legend(fontsize=8)
    ax[1].hist(heads_prior, bins=np.arange(N + 2) - 0.5, density=True, color="C0", alpha=0.3,
               label="simulated: p from the prior, then tosses")
    ax[1].plot(k, pmf, "k.", ms=4, label="exact: BetaBinomial")
    ax[1].axvline(H, color="C3", label=f"observed: {H}")
    ax[1].set(xlabel=f"heads in {N} tosses", title="prior predictive")
    ax[1].legend(fontsize=8)
    doc.figure(fig, "prior_predictive", f"""Left: the prior over p and draws from it. Right: the
        number of heads in {N} tosses the model expects before seeing any, by simulation (draw p
        from the prior, then toss) and exactly; the red line is what was actually observed.""")
    expected = N * a / (a + b)
    far = np.abs(k - expected) >= abs(H - expected)
    tail = float(pmf[far].sum())
    doc.text(f"""
        The prior predictive is wide: the prior allows anything from a heavily tails-biased to a
        heavily heads-biased coin, so it spreads over most counts. The observed {H} heads is
        {"not surprising" if tail > 0.05 else "surprising"} under it: a count at least as far
        from the prior's expected
        {fmt(expected)} has prior predictive probability
        {doc.number('prior_predictive_tail_exact', tail, 3)} exactly
        ({fmt(float(np.mean(np.abs(heads_prior - expected) >= abs(H - expected))), 3)} of the
        simulated counts).
        """)

    doc.heading("The data")
    doc.text(f"""
        {N} tosses of a simulated coin whose true heads probability is {fmt(s['true_p'])} (the
        model is not told this), observed in {len(n)} batches. 1 = heads:
        """)
    edges = np.cumsum([0] + list(n))
    doc.table([{"batch": i + 1, "tosses": "".join(map(str, tosses[lo:hi])), "n": int(n[i]),
                "heads": int(y[i])} for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))])
    fig, ax = plt.subplots(figsize=(8, 2.8))
    t = np.arange(1, N + 1)
    ax.plot(t, np.cumsum(tosses) / t, color="C0", label="proportion of heads so far")
    ax.axhline(s["true_p"], color="0.5", ls=":", label=f"true p = {fmt(s['true_p'])}")
    for e in edges[1:-1]:
        ax.axvline(e + 0.5, color="0.8", lw=0.8)
    ax.set(xlabel="toss", ylim=(0, 1), title="the data, batch boundaries in grey")
    ax.legend(fontsize=8)
    doc.figure(fig, "data", "The running proportion of heads: noisy early, settling later.")
    doc.number("heads", H)
    doc.number("tosses", N)

    doc.heading("Bayes' theorem on a grid, and in closed form")
    g = grid_posterior(n, y, a, b, s["grid_points"])
    log_ev_exact = beta_binomial_exact_log_evidence(torch.as_tensor(n, dtype=torch.float64),
                                                    torch.as_tensor(y, dtype=torch.float64), a, b)
    exact_dens = np.exp(exact.log_prob(torch.as_tensor(g.p)).numpy())
    doc.text(f"""
        Split [0, 1] into {s['grid_points']} cells and take each midpoint as a candidate value
        of p. At every candidate, multiply the prior density by the likelihood of all the data,
        then divide by their sum times the cell width, the grid's version of the integral p(y).
        A few of the {s['grid_points']} rows:
        """)
    rows = []
    for target in (0.1, 0.3, 0.5, 0.7, 0.9):
        i = int(np.argmin(np.abs(g.p - target)))
        rows.append({"p": g.p[i], "prior p(p)": g.prior[i], "likelihood p(y | p)": g.likelihood[i],
                     "prior × likelihood": g.prior[i] * g.likelihood[i],
                     "÷ p(y) = posterior": g.posterior[i], "closed form Beta density": exact_dens[i]})
    doc.table(rows)
    doc.text("""
        The conjugate closed form says the posterior is again a Beta: the heads add to a and
        the tails to b.
        """)
    doc.math(r"p \mid y \sim \mathrm{Beta}\Big(a + \sum_k y_k,\; b + \sum_k (n_k - y_k)\Big)",
             r"p(y) = \prod_k \binom{n_k}{y_k}\, \frac{B(a + \sum y_k,\, b + \sum (n_k - y_k))}{B(a, b)}")
    err = float(np.max(np.abs(g.posterior - exact_dens)) / exact_dens.max())
    ev_rel = abs(math.log(g.evidence) - log_ev_exact)
    doc.text(f"""
        Here that is Beta({fmt(exact.concentration1)}, {fmt(exact.concentration0)}). The grid
        and the closed form agree: the largest difference between the two posterior densities
        is {doc.number('grid_max_density_error_relative', err, 3)} of the peak density, and the
        evidence is log p(y) = {doc.number('log_evidence_grid', math.log(g.evidence), 8)} on the
        grid against {doc.number('log_evidence_exact', log_ev_exact, 8)} exactly (difference
        {fmt(ev_rel, 2)}).
        """)
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.2))
    ax[0].plot(g.p, g.prior, color="C0")
    ax[0].set(title="prior p(p)", xlabel="p")
    ax[1].plot(g.p, g.likelihood, color="C2")
    ax[1].set(title="likelihood p(y | p) (not a density in p)", xlabel="p")
    ax[2].plot(g.p, g.posterior, color="C1", lw=3, alpha=0.5, label="grid: prior × lik / p(y)")
    ax[2].plot(g.p, exact_dens, "k--", lw=1, label="closed form Beta")
    ax[2].set(title="posterior p(p | y)", xlabel="p")
    ax[2].legend(fontsize=8)
    doc.figure(fig, "bayes_theorem", """Prior times likelihood, renormalised, is the posterior.
        The posterior sits between the prior and the likelihood, and is narrower than both.""")

    doc.heading("Sequential updating: yesterday's posterior is today's prior")
    steps = sequential_update(n, y, a, b)
    doc.text("""
        Instead of using all tosses at once, update after each batch: the posterior after batch k
        becomes the prior for batch k + 1. The probability of each batch under the belief held
        just before it, p(y_k | y_1..y_(k-1)), is a Beta-Binomial; by the chain rule of
        probability, their product is the evidence p(y).
        """)
    rows, prev = [{"after": "prior", "a": a, "b": b, "mean": a / (a + b),
                   "sd": float(prior.stddev), "log p(y_k | earlier)": ""}], None
    for i, u in enumerate(steps):
        d = dist.Beta(torch.tensor(u.a), torch.tensor(u.b))
        rows.append({"after": f"batch {i + 1} ({int(y[i])}/{int(n[i])} heads)", "a": u.a, "b": u.b,
                     "mean": float(d.mean), "sd": float(d.stddev), "log p(y_k | earlier)": u.log_predictive})
    doc.table(rows)
    seq_grid = sequential_grid(n, y, a, b, s["grid_points"])
    final = steps[-1]
    same = final.a == float(exact.concentration1) and final.b == float(exact.concentration0)
    log_ev_seq = sum(u.log_predictive for u in steps)
    rev = sequential_update(n[::-1], y[::-1], a, b)[-1]
    doc.text(f"""
        The last row is Beta({fmt(final.a)}, {fmt(final.b)}); all at once it was
        Beta({fmt(exact.concentration1)}, {fmt(exact.concentration0)}): identical
        ({doc.number('sequential_equals_batch', same)}). On the grid, updating batch by batch
        and renormalising each time ends at most
        {doc.number('sequential_grid_max_difference', float(np.max(np.abs(seq_grid - g.posterior))), 2)}
        away from the all-at-once grid posterior (rounding only). The sum of the batches'
        log predictive probabilities is {doc.number('log_evidence_sequential', log_ev_seq, 8)},
        the log evidence again. The order of the batches does not matter either: each update
        multiplies in one more likelihood factor, and multiplication commutes (in reverse order
        the updates end at Beta({fmt(rev.a)}, {fmt(rev.b)})).
        """)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    xs = np.linspace(0.001, 0.999, 500)
    ax.plot(xs, np.exp(prior.log_prob(torch.as_tensor(xs)).numpy()), color="0.5", label="prior")
    for i, u in enumerate(steps):
        dens = np.exp(dist.Beta(torch.tensor(u.a), torch.tensor(u.b)).log_prob(torch.as_tensor(xs)).numpy())
        ax.plot(xs, dens, color=plt.cm.viridis((i + 1) / len(steps)), label=f"after batch {i + 1}")
    ax.plot(xs, np.exp(exact.log_prob(torch.as_tensor(xs)).numpy()), "k--", lw=1, label="all at once")
    ax.axvline(s["true_p"], color="C3", ls=":", label="true p")
    ax.set(xlabel="p", title="belief about p, batch by batch")
    ax.legend(fontsize=8)
    doc.figure(fig, "sequential", """Each batch narrows the belief; the last one lies exactly on
        the all-at-once posterior.""")

    doc.heading(f"The same posterior by MCMC ({s['method']})")
    data = {"n": torch.as_tensor(n, dtype=torch.float64), "y": torch.as_tensor(y, dtype=torch.float64),
            "prior_a": a, "prior_b": b}
    fit = mcmc_fit("beta_binomial", data, s, seed)
    draws = fit.posterior["p"].ravel()
    doc.text(f"""
        Most models have no closed form, so the zoo samples the posterior instead. Here
        `zoo.fit("beta_binomial", data, method="{s['method']}")` drew {draws.size} values of p
        ({fit.num_chains} chains × {fit.num_draws} draws) knowing only the model's code; the
        table compares them with the exact Beta. z is the difference in means in units of its
        Monte Carlo standard error (MCSE): |z| below about 3 is sampling noise.
        {checks_text(fit)}
        """)
    doc.table(fit_table(fit))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(draws, bins=50, density=True, color="C1", alpha=0.5, label=f"{s['method']} draws")
    ax.plot(xs, np.exp(exact.log_prob(torch.as_tensor(xs)).numpy()), "k--", label="exact Beta")
    ax.set(xlabel="p", xlim=(max(0, draws.min() - 0.05), min(1, draws.max() + 0.05)))
    ax.legend(fontsize=8)
    doc.figure(fig, "mcmc_vs_exact", "The sampler's histogram and the exact posterior density (dashed).")

    doc.heading("Posterior predictive checks")
    rep = fit.posterior_predictive()["y"].reshape(-1, len(n))  # (draws, batches)
    total_rep = rep.sum(-1)
    spread_rep = (rep / n).std(-1)
    spread_obs = float((y / n).std())
    pp = np.exp(dist.BetaBinomial(exact.concentration1, exact.concentration0, total_count=float(N))
                .log_prob(torch.as_tensor(k, dtype=torch.float64)).numpy())
    doc.text("""
        If the model is adequate, data simulated from the fitted model should look like the
        data we have. For every posterior draw of p the zoo simulates a replicate of all batches
        (`fit.posterior_predictive()`); we compare a statistic T of the replicates with T of the
        observed data. A posterior predictive p-value P(T(y_rep) ≥ T(y)) (ties count half) near 0
        or 1 would signal a misfit. T1 = the total number of heads (the model was fitted to reproduce it,
        so it should be unremarkable); T2 = the spread (sd) of the per-batch proportions of
        heads, which would be too large if the coin's p drifted between batches.
        """)
    doc.table([{"statistic": "T1: total heads", "observed": H, "replicates' mean": total_rep.mean(),
                "p-value": doc.record("ppc_pvalue_total", ppc_pvalue(total_rep, H))},
               {"statistic": "T2: sd of batch proportions", "observed": spread_obs,
                "replicates' mean": spread_rep.mean(),
                "p-value": doc.record("ppc_pvalue_spread", ppc_pvalue(spread_rep, spread_obs))}])
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].hist(total_rep, bins=np.arange(N + 2) - 0.5, density=True, color="C1", alpha=0.5,
               label="replicates (MCMC)")
    ax[0].plot(k, pp, "k.", ms=4, label="exact: BetaBinomial(N, a', b')")
    ax[0].axvline(H, color="C3", label="observed")
    ax[0].set(xlabel="T1: total heads", xlim=(max(0, H - N // 2), min(N, H + N // 2)))
    ax[0].legend(fontsize=8)
    ax[1].hist(spread_rep, bins=40, density=True, color="C1", alpha=0.5)
    ax[1].axvline(spread_obs, color="C3")
    ax[1].set(xlabel="T2: sd of the batches' proportions of heads")
    doc.figure(fig, "posterior_predictive", """Replicated data from the posterior against the
        observed statistic (red). Left, the exact posterior predictive lies on the simulation.""")

    doc.heading("What the data changed")
    kl = float(kl_divergence(exact, prior))
    w = (a + b) / (a + b + N)
    doc.table([{"": "prior", "mean": float(prior.mean), "sd": float(prior.stddev),
                "90% interval": _interval(prior)},
               {"": "posterior", "mean": float(exact.mean), "sd": float(exact.stddev),
                "90% interval": _interval(exact)}])
    removed = 1 - float(exact.variance / prior.variance)
    doc.text(f"""
        - The posterior sd is {doc.number('sd_ratio', float(exact.stddev / prior.stddev), 3)} of the
          prior sd: the tosses removed {doc.number('prior_variance_removed', removed, 3)} of the
          prior variance.
        - The posterior mean is a weighted average of the prior mean and the observed proportion
          of heads, with weight (a + b)/(a + b + N) = {doc.number('prior_weight', w, 3)} on the
          prior: {fmt(w, 3)} × {fmt(a / (a + b), 3)} + {fmt(1 - w, 3)} × {fmt(H / N, 3)} =
          {fmt(float(exact.mean), 4)}. The prior counts as a + b = {fmt(a + b)} imaginary tosses;
          more real tosses would shrink its weight further.
        - The information gained, KL(posterior ‖ prior) = ∫ p(p | y) log[p(p | y) / p(p)] dp,
          is {doc.number('kl_posterior_prior_nats', kl, 3)} nats
          ({fmt(kl / math.log(2), 3)} bits).
        """)


def _interval(d: dist.Beta) -> str:
    from scipy.stats import beta

    lo, hi = beta.ppf([0.05, 0.95], float(d.concentration1), float(d.concentration0))
    return f"[{fmt(lo, 3)}, {fmt(hi, 3)}]"
