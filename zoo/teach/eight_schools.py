"""Walk-through: the eight schools, three ways of pooling, shrinkage, and the funnel.

    complete pooling:  y_j ~ Normal(μ, σ_j)                 (one effect for all: τ = 0)
    no pooling:        y_j ~ Normal(θ_j, σ_j), θ_j ~ Normal(0, 5) independently
    partial pooling:   θ_j ~ Normal(μ, τ), μ ~ Normal(0, 5), τ ~ HalfCauchy(5)

Complete and no pooling are Gaussian, so the zoo carries their exact posteriors; the
hierarchical model is sampled, non-centred (θ_j = μ + τ z_j) for the results and also
centred, to show the funnel: the centred sampler's divergences gather where τ is small.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pyro

from ..errors import ZooError
from .document import Document, fmt, plt
from .shared import checks_text, fit_table, mcmc_fit, ppc_pvalue, validate_inference

TITLE = "Eight schools: pooling, shrinkage and the funnel"
INTRO = """
Eight schools ran the same coaching programme for a test; each reports an estimated effect and
its standard error (Rubin 1981). How much should one school's estimate borrow from the others?
Three models answer *none*, *completely*, and *as much as the data say*. The last one, the
hierarchical model, also shows why the way a model is written can matter to the sampler. Every
number and figure below was computed when this report was built; the text around them was
written once.
"""

DEFAULTS: dict[str, Any] = {
    "prior_draws": 4000,
    "method": "chees",
    "inference": {"num_warmup": 400, "num_samples": 100, "num_chains": 128},
}


def validate(settings: Mapping[str, Any], where: str) -> None:
    if settings["prior_draws"] < 10:
        raise ZooError(f"{where}: teach.prior_draws must be >= 10, got {settings['prior_draws']}")
    validate_inference(settings, where)


def conditional_shrinkage(sigma: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """E[B_j | y] with B_j = σ_j² / (σ_j² + τ²), over posterior draws of τ: given (μ, τ), the
    posterior mean of θ_j is (1 − B_j) y_j + B_j μ, so B_j is the pull towards μ."""
    s2 = np.asarray(sigma)[None, :] ** 2
    return (s2 / (s2 + np.asarray(tau).reshape(-1, 1) ** 2)).mean(0)


def _interval(draws: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return np.percentile(draws, 5, axis=axis), np.percentile(draws, 95, axis=axis)


def build(doc: Document, s: Mapping[str, Any], seed: int) -> None:
    import zoo
    from ..tracing import prior_draws

    data = zoo.load_dataset("eight_schools")
    y, sigma, J = data["y"].numpy(), data["sigma"].numpy(), int(data["J"])
    schools = [chr(ord("A") + j) for j in range(J)]

    doc.heading("The data")
    doc.text("""
        Each school's estimated coaching effect y_j (points on the test) and its standard error
        σ_j, treated as known. The error bars are large compared with the differences between
        schools: a school's own estimate says little on its own.
        """)
    doc.table([{"school": schools[j], "y_j": y[j], "σ_j": sigma[j]} for j in range(J)])
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.errorbar(range(J), y, yerr=sigma, fmt="o", capsize=3)
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set(xticks=range(J), xticklabels=schools, ylabel="estimated effect ± 1 se")
    doc.figure(fig, "data", "The eight estimates with ±1 standard error.")

    doc.heading("Three models")
    doc.math(r"\text{complete pooling:}\quad \mu \sim \mathcal N(0, 5^2),\quad "
             r"y_j \sim \mathcal N(\mu, \sigma_j^2)",
             r"\text{no pooling:}\quad \theta_j \sim \mathcal N(0, 5^2)\ \text{independently},\quad "
             r"y_j \sim \mathcal N(\theta_j, \sigma_j^2)",
             r"\text{partial pooling:}\quad \mu \sim \mathcal N(0, 5^2),\ \tau \sim \mathrm{HalfCauchy}(5),"
             r"\ \theta_j \sim \mathcal N(\mu, \tau^2),\ y_j \sim \mathcal N(\theta_j, \sigma_j^2)")
    doc.text("""
        Complete pooling assumes one true effect μ shared by all schools; no pooling gives every
        school its own effect and lets no school inform another; partial pooling draws the
        school effects from a common population with mean μ and spread τ, and *learns* τ. As
        τ → 0 it becomes complete pooling, as τ → ∞ no pooling (with a flat prior). The zoo's
        models are `eight_schools_complete_pooling`, `eight_schools_no_pooling` and
        `eight_schools_noncentered`; the first two are Gaussian, so their posteriors are known
        exactly.
        """)

    doc.heading("Prior predictive of the hierarchical model")
    spec = zoo.get_model("eight_schools_noncentered")
    pyro.set_rng_seed(seed)
    prior = {k: v.numpy() for k, v in prior_draws(spec.fn, {"sigma": data["sigma"], "J": J},
                                                   s["prior_draws"]).items()}
    y_prior = prior["y"]
    lo, hi = _interval(y_prior[:, 0])
    huge = float(np.mean(np.abs(y_prior) > 100))
    q05, q95 = _interval(y_prior)
    inside = int(np.sum((y >= q05) & (y <= q95)))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].hist(np.clip(prior["tau"], 0, 60), bins=60, density=True, color="C0", alpha=0.4)
    ax[0].set(xlabel="τ (draws above 60 piled at 60)", title="prior on τ: HalfCauchy(5)")
    clipped = np.clip(y_prior[:, 0], -100, 100)
    ax[1].hist(clipped, bins=80, density=True, color="C0", alpha=0.4, label="prior predictive y_A")
    ax[1].axvline(y[0], color="C3", label=f"observed y_A = {fmt(y[0])}")
    ax[1].set(xlabel="y_A (clipped to ±100)", title="what school A could report, a priori")
    ax[1].legend(fontsize=8)
    doc.figure(fig, "prior_predictive", """Draws from the hierarchical model before seeing the
        data (its `pyro.sample` statements run forward): the prior on τ and the effect school A
        could report.""")
    doc.text(f"""
        The HalfCauchy prior on τ has a heavy tail: it keeps large between-school differences
        possible. The 90% prior predictive interval for school A's estimate is
        [{fmt(lo, 3)}, {fmt(hi, 3)}], and {doc.number('prior_predictive_fraction_above_100', huge, 3)}
        of the simulated estimates exceed 100 points in size, which is implausible for a test
        whose scores span a few hundred points: the prior is *weakly* informative, it rules out
        little. {inside} of the {J} observed estimates lie inside their school's 90% prior
        predictive interval.
        """)

    doc.heading("Fitting the three models")
    fits = {name: mcmc_fit(f"eight_schools_{name}", data, s, seed)
            for name in ("complete_pooling", "no_pooling", "noncentered")}
    partial = fits["noncentered"]
    doc.text(f"""
        Each model is fitted with `zoo.fit(model, data, method="{s['method']}")`. For the two
        Gaussian models the sampler can be checked against the exact posterior (z = difference
        of means / MCSE; |z| below about 3 is Monte Carlo noise):
        """)
    doc.text("**Complete pooling** (one μ):")
    doc.table(fit_table(fits["complete_pooling"]))
    doc.text("**No pooling** (eight θ_j, each with its own Normal(0, 5) prior):")
    doc.table(fit_table(fits["no_pooling"]))
    doc.text("**Partial pooling** (no closed form). "
             + checks_text(partial, "the non-centred hierarchical model"))

    mu_c = fits["complete_pooling"].posterior["mu"].ravel()
    th_n = fits["no_pooling"].posterior["theta"].reshape(-1, J)
    th_p = partial.posterior["theta"].reshape(-1, J)
    mu_p, tau = partial.posterior["mu"].ravel(), partial.posterior["tau"].ravel()
    rows = []
    for j in range(J):
        rows.append({"school": schools[j], "y_j": y[j],
                     "no pooling": _summary(th_n[:, j]), "partial pooling": _summary(th_p[:, j]),
                     "complete pooling": _summary(mu_c)})
    doc.text("Posterior mean [90% interval] of each school's effect under each model:")
    doc.table(rows, digits=3)
    doc.text("""
        The zoo's *no pooling* model is not "each school on its own data": its Normal(0, 5) prior
        on every θ_j is much narrower than the standard errors (9 to 18), so each school's own
        prior pulls its estimate most of the way to 0. A flat prior would leave θ_j at y_j. The
        shrinkage plot below therefore starts from the raw estimates y_j.
        """)

    doc.heading("Shrinkage")
    mean_p = th_p.mean(0)
    mu_hat = float(mu_p.mean())
    observed = (y - mean_p) / (y - mu_hat)
    B = conditional_shrinkage(sigma, tau)
    fig, ax = plt.subplots(figsize=(6, 4))
    for j in range(J):
        ax.plot([0, 1], [y[j], mean_p[j]], "-o", color=plt.cm.viridis(sigma[j] / sigma.max()))
        ax.annotate(f"{schools[j]} (σ={fmt(sigma[j])})", (0, y[j]), xytext=(-62, -3),
                    textcoords="offset points", fontsize=7)
    ax.axhline(mu_hat, color="C3", ls="--", label=f"E[μ | y] = {fmt(mu_hat, 3)}")
    ax.set(xticks=[0, 1], xticklabels=["raw estimate y_j", "partial pooling E[θ_j | y]"],
           xlim=(-0.35, 1.1), ylabel="effect")
    ax.legend(fontsize=8)
    doc.figure(fig, "shrinkage", """Each line joins a school's raw estimate to its
        partial-pooling posterior mean (colour: σ_j, lighter = noisier); every school moves
        towards the common mean μ, and
        the estimates end up much closer together than the raw ones.""")
    doc.text("""
        Given μ and τ, the hierarchical posterior mean of θ_j is a precision-weighted average of
        the school's own estimate and the population mean, with weight B_j on μ:
        """)
    doc.math(r"E[\theta_j \mid \mu, \tau, y] = (1 - B_j)\, y_j + B_j\, \mu, \qquad "
             r"B_j = \frac{\sigma_j^2}{\sigma_j^2 + \tau^2}")
    doc.text("""
        Noisier schools (larger σ_j) are pulled harder. Averaged over the posterior of τ, the
        model's shrinkage E[B_j | y] can be set beside the fraction of the way each school
        actually moved towards E[μ | y], (y_j − E[θ_j | y]) / (y_j − E[μ | y]); they need not be
        equal (the average of a ratio is not the ratio of averages, and μ is uncertain too), and
        the fraction is unstable for a school whose y_j is close to E[μ | y]:
        """)
    doc.table([{"school": schools[j], "σ_j": sigma[j], "y_j": y[j], "E[θ_j | y]": mean_p[j],
                "fraction moved towards E[μ | y]": observed[j], "E[B_j | y]": B[j]}
               for j in range(J)], digits=3)
    doc.number("shrinkage_mean_B", float(B.mean()))

    doc.heading("Posterior predictive checks")
    reps = {
        "complete pooling": fits["complete_pooling"].posterior_predictive()["y"].reshape(-1, J),
        "partial pooling": partial.posterior_predictive()["y"].reshape(-1, J)}
    stats = [("largest y_j", lambda r: r.max(-1), y.max()),
             ("smallest y_j", lambda r: r.min(-1), y.min()),
             ("sd of the y_j", lambda r: r.std(-1), y.std())]
    doc.text("""
        Each posterior draw simulates eight new estimates (`fit.posterior_predictive()`). If the
        model fits, the observed data should look like a typical replicate:
        p = P(T(y_rep) ≥ T(y)), values near 0 or 1 signal a misfit.
        """)
    doc.table([{"statistic T": name, "observed": obs,
                **{f"p ({m})": doc.record(f"ppc_pvalue_{m.split()[0]}_{i}", ppc_pvalue(f(r), obs))
                   for m, r in reps.items()}}
               for i, (name, f, obs) in enumerate(stats)])
    p_sd = ppc_pvalue(reps["complete pooling"].std(-1), y.std())
    doc.text(f"""
        The spread of the eight estimates is the statistic that speaks to pooling: under
        complete pooling (τ = 0) it comes only from the standard errors, and its p-value is
        {fmt(p_sd, 3)}, so {"the data do not contradict complete pooling" if 0.05 < p_sd < 0.95
        else "complete pooling does not reproduce it"}. This is why τ is hard to pin down here.
        """)
    fig, ax = plt.subplots(figsize=(7, 3))
    lo_r, hi_r = _interval(reps["partial pooling"])
    inside = int(np.sum((y >= lo_r) & (y <= hi_r)))
    ax.vlines(range(J), lo_r, hi_r, color="C0", lw=6, alpha=0.3, label="90% of replicates (partial pooling)")
    ax.plot(range(J), y, "o", color="C3", label="observed")
    ax.set(xticks=range(J), xticklabels=schools, ylabel="y_j")
    ax.legend(fontsize=8)
    doc.figure(fig, "posterior_predictive", f"""Each school's replicated estimates under partial
        pooling and the observed one: {inside} of {J} observed estimates lie inside the central
        90% of their replicates.""")

    doc.heading("The funnel: why the model is written non-centred")
    centred = mcmc_fit("eight_schools_centered", data, s, seed)
    div = {"centred": centred.sample_stats["diverging"], "non-centred": partial.sample_stats["diverging"]}
    n_div = {k: int(np.asarray(v).sum()) for k, v in div.items()}
    doc.text("""
        The hierarchical model can be written two ways that define the same posterior:
        """)
    doc.math(r"\text{centred:}\quad \theta_j \sim \mathcal N(\mu, \tau^2) \qquad\qquad "
             r"\text{non-centred:}\quad z_j \sim \mathcal N(0, 1),\ \theta_j = \mu + \tau z_j")
    doc.text(f"""
        In the centred form the sampler moves through (μ, τ, θ) directly. When τ is small, all
        θ_j must sit within a tiny distance of μ; when τ is large they may spread widely: the
        posterior is a *funnel* whose neck is too narrow for a step size tuned to its mouth.
        Hamiltonian Monte Carlo detects that its simulated trajectory broke down there and
        records a *divergent transition*. The non-centred form samples z_j, which are
        Normal(0, 1) whatever τ is, so the funnel is never seen. Both were fitted with the same
        settings; the counts come from each fit's `sample_stats["diverging"]`:
        centred **{doc.number('divergences_centred', n_div['centred'])}** divergent transitions of
        {np.asarray(div['centred']).size}, non-centred
        **{doc.number('divergences_noncentred', n_div['non-centred'])}** of
        {np.asarray(div['non-centred']).size}.
        """)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    panels = [("centred: θ_A", centred, centred.posterior["theta"][..., 0], div["centred"]),
              ("non-centred: θ_A = μ + τ z_A", partial, partial.posterior["theta"][..., 0],
               div["non-centred"]),
              ("non-centred: z_A (what its sampler sees)", partial, partial.posterior["theta_trans"][..., 0],
               div["non-centred"])]
    for a, (label, f, xval, d) in zip(ax, panels):
        d = np.asarray(d, dtype=bool)
        logt = np.log(f.posterior["tau"])
        a.plot(xval[~d], logt[~d], ".", ms=2, alpha=0.3, color="C0", label="draws")
        a.plot(xval[d], logt[d], ".", ms=5, color="C3", label=f"divergent ({int(d.sum())})")
        a.set(xlabel=label)
        a.legend(fontsize=8, loc="lower right")
    ax[0].set_ylabel("log τ")
    doc.figure(fig, "funnel", """log τ against school A's effect. Left: the centred fit; its
        divergences (red) gather in the neck of the funnel, at small τ. Middle: the non-centred
        fit drawn in the same coordinates has the same funnel shape but explores its neck. Right:
        in the coordinates the non-centred sampler actually moves in, there is no funnel.""")
    log_tau = {"c": np.log(centred.posterior["tau"]), "n": np.log(partial.posterior["tau"])}
    deep = {k: float(np.mean(v < -3)) for k, v in log_tau.items()}
    q01 = {k: float(np.percentile(v, 1)) for k, v in log_tau.items()}
    verdict = ("the centred fit misses part of the neck, so its posterior for τ is biased "
               "upwards (and the θ_j are shrunk too little)" if deep["c"] < deep["n"] else
               "at these settings the centred fit still reached the neck; its divergences warn "
               "that it might not have")
    checks = centred.checks()
    bfmi_failed = bool((checks["check"].str.contains("E-BFMI") & ~checks["passed"].astype(bool)).any())
    bfmi_note = (" A low E-BFMI (energy Bayesian fraction of missing information) is another "
                 "symptom of the funnel: the sampler's energy changes too little between "
                 "iterations to move across the whole range of τ." if bfmi_failed else "")
    doc.text(f"""
        Divergences are more than a warning label: a divergent trajectory is one that tried to
        enter the neck and failed, so a centred sampler tends to under-visit small τ. Here
        P(log τ < −3 | y) is {doc.number('p_log_tau_below_-3_centred', deep['c'], 3)} from the
        centred fit and {doc.number('p_log_tau_below_-3_noncentred', deep['n'], 3)} from the
        non-centred one, and the 1% quantile of log τ is {fmt(q01['c'], 3)} against
        {fmt(q01['n'], 3)}: {verdict}. {checks_text(centred, "the centred fit")}{bfmi_note}
        {checks_text(partial, "the non-centred fit")}
        """)

    doc.heading("What the data changed")
    tau_prior, mu_prior, th_prior = prior["tau"], prior["mu"], prior["theta"]
    width = lambda d: float(np.subtract(*np.percentile(d, [95, 5])))  # noqa: E731
    rows = [{"parameter": "μ", "prior 90% width": width(mu_prior), "posterior 90% width": width(mu_p),
             "prior sd": 5.0, "posterior sd": float(mu_p.std())},
            {"parameter": "τ", "prior 90% width": width(tau_prior), "posterior 90% width": width(tau),
             "prior sd": "∞ (HalfCauchy)", "posterior sd": float(tau.std())}]
    rows += [{"parameter": f"θ_{schools[j]}", "prior 90% width": width(th_prior[:, j]),
              "posterior 90% width": width(th_p[:, j]), "prior sd": "∞",
              "posterior sd": float(th_p[:, j].std())}
             for j in range(J)]
    doc.table(rows, digits=3)
    removed = 1 - float(mu_p.var()) / 25.0
    doc.text(f"""
        - μ, the average effect, is learned from all eight schools together: the data removed
          {doc.number('prior_variance_removed_mu', removed, 3)} of its prior variance (prior sd 5,
          posterior sd {fmt(float(mu_p.std()), 3)}).
        - τ is learned poorly: eight noisy estimates say little about how much the true effects
          differ. Its prior median is 5 (HalfCauchy(5)); its posterior median is
          {doc.number('tau_posterior_median', float(np.median(tau)), 3)}, with
          P(τ < 5 | y) = {doc.number('tau_posterior_p_below_5', float(np.mean(tau < 5)), 3)}
          against 0.5 a priori.
        - The prior of each θ_j (and of τ) has no finite variance, so "variance removed" is not
          defined; the 90% intervals show the change instead. The school effects' posterior
          intervals are much narrower than the prior's heavy-tailed ones, but still wide:
          partial pooling borrows strength, it does not create information.
        """)


def _summary(draws: np.ndarray) -> str:
    lo, hi = np.percentile(draws, [5, 95])
    return f"{fmt(float(draws.mean()), 3)} [{fmt(float(lo), 3)}, {fmt(float(hi), 3)}]"
