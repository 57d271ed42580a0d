"""Walk-through: Bayesian linear regression with the zoo's conjugate ``linear_regression``.

    σ² ~ InverseGamma(a₀, b₀);  β | σ² ~ Normal(0, s² σ² I);  y_n ~ Normal(β₀ + β₁ x_n, σ)

The normal-inverse-gamma (NIG) posterior after the first n points is exact
(``zoo.models.conjugate.nig_posterior``); β's marginal is a bivariate Student t with 2a_n
degrees of freedom, which is what the contour panels draw (Bishop 2006, figure 3.7). The
information gained is the closed-form KL(NIG_n ‖ NIG_0) (``nig_kl``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from scipy import stats

from ..errors import ZooError
from ..models.conjugate import NIGPosterior, nig_posterior
from .document import Document, fmt, plt
from .shared import checks_text, fit_table, mcmc_fit, ppc_pvalue, validate_inference

TITLE = "Bayesian linear regression: from prior lines to posterior lines"
INTRO = """
A straight line is fitted to noisy points, the Bayesian way: we start from a distribution over
lines (the prior), watch it narrow as points arrive one by one, compare the exact posterior
with the zoo's MCMC, and predict new points with honest error bands. The picture of
section 4 is Bishop's *Pattern Recognition and Machine Learning*, figure 3.7. Every number and
figure below was computed when this report was built; the text around them was written once.
"""

DEFAULTS: dict[str, Any] = {
    "intercept": -0.3,  # the true line of Bishop's example: y = -0.3 + 0.5 x + noise
    "slope": 0.5,
    "noise": 0.2,
    "num_points": 20,
    "stages": [1, 2, 5, 20],  # posterior shown after the first n points
    "prior_a": 2.0,  # sigma² ~ InverseGamma(2, 0.1): sigma around 0.2-0.3
    "prior_b": 0.1,
    "prior_scale": 2.0,  # beta | sigma² ~ Normal(0, 2 sigma): lines of moderate slope
    "num_lines": 6,
    "prior_draws": 2000,
    "grid_points": 150,
    "test_points": 2000,
    "method": "chees",
    "inference": {"num_warmup": 400, "num_samples": 100, "num_chains": 64},
}


def validate(settings: Mapping[str, Any], where: str) -> None:
    s = settings
    if not s["prior_a"] > 1:  # the Student-t prior of beta has a finite sd only for 2 a0 > 2
        raise ZooError(f"{where}: teach.prior_a must be > 1 (a finite prior sd), got {s['prior_a']}")
    for key in ("prior_b", "prior_scale", "noise"):
        if not s[key] > 0:
            raise ZooError(f"{where}: teach.{key} must be > 0, got {s[key]}")
    stages = s["stages"]
    if not stages or stages != sorted(set(stages)) or stages[0] < 1 or stages[-1] > s["num_points"]:
        raise ZooError(f"{where}: teach.stages must increase from >= 1 to <= num_points "
                       f"({s['num_points']}), got {stages}")
    for key in ("num_lines", "prior_draws", "grid_points", "test_points"):
        if s[key] < 2:
            raise ZooError(f"{where}: teach.{key} must be >= 2, got {s[key]}")
    validate_inference(s, where)


# -- the computations ---------------------------------------------------------------------------
def design(x: np.ndarray) -> torch.Tensor:
    """[1, x]: the intercept is the coefficient of a column of ones."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return torch.stack([torch.ones_like(x), x], -1)


def nig_prior(a: float, b: float, scale: float) -> NIGPosterior:
    """The prior as an NIG with no data: loc 0, cov V0 = s² I, (a0, b0)."""
    t = torch.float64
    return NIGPosterior(torch.zeros(2, dtype=t), scale**2 * torch.eye(2, dtype=t),
                        torch.tensor(a, dtype=t), torch.tensor(b, dtype=t))


def beta_marginal(post: NIGPosterior) -> dist.MultivariateStudentT:
    """β's marginal with σ² integrated out: t_{2a}(m, (b/a) V)."""
    scale = torch.linalg.cholesky(post.rate / post.concentration * post.cov)
    return dist.MultivariateStudentT(2 * post.concentration, post.loc, scale)


def nig_kl(q: NIGPosterior, p: NIGPosterior) -> float:
    """KL(q ‖ p) between NIG distributions, exactly:

    KL(Gamma(a_q, b_q) ‖ Gamma(a_p, b_p))  (on the precision 1/σ²: KL is invariant under 1/x)
    + E_q[KL(N(m_q, σ² V_q) ‖ N(m_p, σ² V_p))], which is linear in 1/σ², with E_q[1/σ²] = a_q/b_q:
    ½[tr(V_p⁻¹ V_q) + (a_q/b_q) (m_q − m_p)ᵀ V_p⁻¹ (m_q − m_p) − D + log|V_p| − log|V_q|]."""
    gamma = torch.distributions.kl_divergence(torch.distributions.Gamma(q.concentration, q.rate),
                                              torch.distributions.Gamma(p.concentration, p.rate))
    p_inv = torch.linalg.inv(p.cov)
    diff = q.loc - p.loc
    gauss = 0.5 * (torch.trace(p_inv @ q.cov) + q.concentration / q.rate * diff @ p_inv @ diff
                   - q.loc.numel() + torch.logdet(p.cov) - torch.logdet(q.cov))
    return float(gamma + gauss)


def nig_draws(post: NIGPosterior, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(β (num, D), σ² (num,)) from the NIG: σ² = 1/Gamma(a, b), β = m + σ L z."""
    sigma2 = 1.0 / rng.gamma(float(post.concentration), 1.0 / float(post.rate), size=num)
    chol = np.linalg.cholesky(post.cov.numpy())
    beta = post.loc.numpy() + np.sqrt(sigma2)[:, None] * rng.standard_normal((num, 2)) @ chol.T
    return beta, sigma2


def predictive_t(post: NIGPosterior, x: np.ndarray, noise: bool) -> stats.rv_continuous:
    """The exact predictive of y (noise=True) or of the line β₀ + β₁x (noise=False) at x:
    t_{2a}(x m, (b/a)(1 + x V xᵀ)) or t_{2a}(x m, (b/a) x V xᵀ)."""
    X = design(x)
    quad = ((X @ post.cov) * X).sum(-1)
    scale2 = post.rate / post.concentration * (quad + (1.0 if noise else 0.0))
    return stats.t(df=float(2 * post.concentration), loc=(X @ post.loc).numpy(),
                   scale=np.sqrt(scale2.numpy()))


def simulate(s: Mapping[str, Any], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1.0, 1.0, n)
    return x, s["intercept"] + s["slope"] * x + s["noise"] * rng.standard_normal(n)


# -- the report -------------------------------------------------------------------------------------
def build(doc: Document, s: Mapping[str, Any], seed: int) -> None:
    import zoo
    from ..tracing import prior_draws

    a0, b0, scale = s["prior_a"], s["prior_b"], s["prior_scale"]
    hyper = {"prior_a": a0, "prior_b": b0, "prior_scale": scale}
    rng = np.random.default_rng(seed)
    x, y = simulate(s, s["num_points"], rng)
    prior = nig_prior(a0, b0, scale)
    grid_x = np.linspace(-1.0, 1.0, 101)
    truth = np.array([s["intercept"], s["slope"]])

    doc.heading("The model")
    doc.text("""
        Each observation is a point on an unknown line plus Gaussian noise of unknown size. The
        zoo's `linear_regression` model puts a *normal-inverse-gamma* prior on the two
        coefficients β = (β₀, β₁) and the noise variance σ²:
        """)
    doc.math(r"\sigma^2 \sim \mathrm{InvGamma}(a_0, b_0), \qquad "
             r"\beta_j \mid \sigma^2 \sim \mathcal N(0, s^2 \sigma^2), \qquad "
             r"y_n \sim \mathcal N(\beta_0 + \beta_1 x_n,\ \sigma^2)")
    doc.text(f"""
        with a₀ = {fmt(a0)}, b₀ = {fmt(b0)}, s = {fmt(scale)}. This prior is *conjugate*: after
        seeing n points the posterior has the same form, with (writing X for the n × 2 matrix
        of rows [1, x_n])
        """)
    doc.math(r"V_n = (X^\top X + I/s^2)^{-1}, \quad m_n = V_n X^\top y, \quad "
             r"a_n = a_0 + n/2, \quad b_n = b_0 + \tfrac12\big(\lVert y - X m_n\rVert^2 + "
             r"\lVert m_n \rVert^2 / s^2\big)",
             r"\beta \mid y \sim t_{2 a_n}\big(m_n,\ (b_n/a_n)\, V_n\big), \qquad "
             r"\sigma^2 \mid y \sim \mathrm{InvGamma}(a_n, b_n)")
    doc.text("""
        Integrating σ² out turns the Gaussian for β into a Student t: we are unsure of the noise
        level, so we are less sure of the line than a known σ would make us.
        """)

    doc.heading("Prior predictive: lines the model believes in before any data")
    spec = zoo.get_model("linear_regression")
    pyro.set_rng_seed(seed)
    draws = prior_draws(spec.fn, {"x": design(grid_x), **hyper}, s["prior_draws"])
    lines = draws["y"].numpy()  # (draws, grid): whole simulated data sets along the grid
    beta_prior = draws["beta"].numpy()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    for j in range(s["num_lines"]):
        ax[0].plot(grid_x, design(grid_x).numpy() @ beta_prior[j], color="C0", alpha=0.8)
    ax[0].set(xlabel="x", ylabel="y", ylim=(-3, 3), title=f"{s['num_lines']} lines from the prior")
    lo, hi = np.percentile(lines, [5, 95], axis=0)
    ax[1].fill_between(grid_x, lo, hi, color="C0", alpha=0.2, label="90% of prior predictive y")
    for j in range(3):
        ax[1].plot(grid_x, lines[j], ".", ms=2, color=f"C{j + 1}")
    ax[1].set(xlabel="x", ylim=(-3, 3), title="data sets simulated from the prior")
    ax[1].legend(fontsize=8)
    doc.figure(fig, "prior_predictive", """Left: straight lines β₀ + β₁x with β drawn from the
        prior (the model's own `pyro.sample` statements run forward). Right: whole data sets
        simulated the same way, and the band holding 90% of simulated y at each x.""")
    sd_slope = float(beta_marginal(prior).variance[1].sqrt())
    doc.text(f"""
        The prior says: lines of either sign, with slopes mostly within ±{fmt(2 * sd_slope, 2)}
        (the prior sd of β₁ is {doc.number('prior_sd_slope', sd_slope, 3)}), and noise around
        them. At x = 0, 90% of simulated y fall within
        [{fmt(lo[50], 3)}, {fmt(hi[50], 3)}]: wide enough for any plausible data on this scale,
        not so wide that it claims values like ±100 are likely.
        """)

    doc.heading("The data")
    doc.text(f"""
        {s['num_points']} points with x uniform on [−1, 1] and y = {fmt(s['intercept'])} +
        {fmt(s['slope'])} x + Normal(0, {fmt(s['noise'])}) noise (the truth, which the model does
        not know). They arrive in the order drawn.
        """)
    doc.table([{"n": i + 1, "x": x[i], "y": y[i]} for i in range(min(len(x), 8))])
    if len(x) > 8:
        doc.text(f"(first 8 of {len(x)} rows shown)")

    doc.heading("Posterior lines as the points arrive")
    stages = [0] + list(s["stages"])
    posts = {n: (prior if n == 0 else nig_posterior(design(x[:n]), torch.as_tensor(y[:n]), a0, b0, scale))
             for n in stages}
    g = np.linspace(-1, 1, s["grid_points"])
    W0, W1 = np.meshgrid(g, g)
    fig, axes = plt.subplots(len(stages), 2, figsize=(8, 3.2 * len(stages)), squeeze=False)
    for row, n in zip(axes, stages):
        post = posts[n]
        dens = beta_marginal(post).log_prob(torch.as_tensor(np.stack([W0, W1], -1))).exp().numpy()
        row[0].contourf(W0, W1, dens, levels=20, cmap="viridis")
        row[0].plot(*truth, "w+", ms=12, mew=2)
        row[0].set(xlabel="β₀ (intercept)", ylabel="β₁ (slope)",
                   title="prior" if n == 0 else f"posterior after n = {n}")
        beta, _ = nig_draws(post, s["num_lines"], rng)
        for bj in beta:
            row[1].plot(grid_x, design(grid_x).numpy() @ bj, color="C3", alpha=0.8)
        row[1].plot(grid_x, design(grid_x).numpy() @ truth, "k:", lw=1)
        row[1].plot(x[:n], y[:n], "o", mfc="none", color="C0", ms=7)
        row[1].set(xlabel="x", ylabel="y", xlim=(-1, 1), ylim=(-1.5, 1.5))
    doc.figure(fig, "posterior_lines", """Left: the density of (β₀, β₁), white cross at the
        truth. Right: lines drawn from it, the data seen so far (circles) and the true line
        (dotted). One point allows every line through it; two pin down a line up to noise; each
        further point narrows the cloud.""")
    rows = []
    for n in stages:
        m = beta_marginal(posts[n])
        rows.append({"n": n, "mean β₀": float(m.mean[0]), "sd β₀": float(m.variance[0].sqrt()),
                     "mean β₁": float(m.mean[1]), "sd β₁": float(m.variance[1].sqrt()),
                     "E[σ]": _sigma_mean(posts[n]),
                     "KL(posterior ‖ prior), nats": nig_kl(posts[n], prior)})
    doc.table(rows)
    doc.text(f"""
        The posterior sd of the slope falls roughly like 1/√n once the data dominate; the
        information gained, KL(posterior ‖ prior) (exact, for NIG distributions), grows with
        every point, to {doc.number('kl_final_nats', rows[-1]['KL(posterior ‖ prior), nats'], 3)}
        nats after {stages[-1]}.
        """)

    n_all = s["num_points"]
    post = nig_posterior(design(x), torch.as_tensor(y), a0, b0, scale)
    doc.heading(f"Exact posterior versus the zoo's MCMC ({s['method']}), all {n_all} points")
    fit = mcmc_fit("linear_regression", {"x": design(x), "y": torch.as_tensor(y), **hyper}, s, seed)
    doc.text(f"""
        The zoo sampled the same posterior without using the closed form:
        `zoo.fit("linear_regression", data, method="{s['method']}")`, {fit.num_chains} chains ×
        {fit.num_draws} draws. {checks_text(fit)} The sampler's means and sds against the exact
        ones (z = difference / MCSE; |z| below about 3 is Monte Carlo noise):
        """)
    doc.table(fit_table(fit))
    exact = spec.exact_posterior(design(x), torch.as_tensor(y), **hyper)
    fig, ax = plt.subplots(1, 3, figsize=(12, 3))
    panels = [("beta", 0, "β₀"), ("beta", 1, "β₁"), ("sigma2", None, "σ²")]
    for i, (site, idx, label) in enumerate(panels):
        d = fit.posterior[site].reshape(-1, 2)[:, idx] if idx is not None else fit.posterior[site].ravel()
        lo_, hi_ = np.percentile(d, [0.2, 99.8])
        t = np.linspace(lo_, hi_, 300)
        e = exact[site]
        dens = (e.log_prob(torch.as_tensor(t)[:, None].expand(-1, 2))[:, idx] if idx is not None
                else e.log_prob(torch.as_tensor(t))).exp().numpy()
        ax[i].hist(d, bins=50, range=(lo_, hi_), density=True, color="C1", alpha=0.5, label=s["method"])
        ax[i].plot(t, dens, "k--", label="exact")
        ax[i].set(title=label)
    ax[0].legend(fontsize=8)
    doc.figure(fig, "mcmc_vs_exact", "Histograms of the MCMC draws on the exact marginal densities.")

    doc.heading("Posterior predictive bands and checks")
    xs = np.linspace(-1.5, 1.5, 121)
    line_t, pred_t = predictive_t(post, xs, noise=False), predictive_t(post, xs, noise=True)
    y_draws = fit.predict({"x": design(xs)}, seed=seed)["y"].numpy()
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.fill_between(xs, *pred_t.ppf([[0.05], [0.95]]), color="C0", alpha=0.15,
                    label="90% predictive band for a new y (exact)")
    ax.fill_between(xs, *line_t.ppf([[0.05], [0.95]]), color="C3", alpha=0.3,
                    label="90% band for the line itself (exact)")
    ax.plot(xs, np.percentile(y_draws, 5, 0), "C0--", lw=1, label="same, from the MCMC fit")
    ax.plot(xs, np.percentile(y_draws, 95, 0), "C0--", lw=1)
    ax.plot(xs, line_t.mean(), color="C3", label="posterior mean line")
    ax.plot(xs, design(xs).numpy() @ truth, "k:", lw=1, label="true line")
    ax.plot(x, y, "o", mfc="none", color="k", ms=5)
    ax.axvspan(-1.5, -1, color="0.9", zorder=0)
    ax.axvspan(1, 1.5, color="0.9", zorder=0)
    ax.set(xlabel="x (grey: outside the range of the data)", ylabel="y")
    ax.legend(fontsize=7, loc="upper left")
    doc.figure(fig, "predictive_bands", """The narrow band is where the line could be; the wide
        band is where a new observation could fall, which adds the noise σ. Both widen outside
        [−1, 1], where the line's slope uncertainty is multiplied by a larger |x|.""")
    noise_var = float(post.rate / (post.concentration - 1))
    quad = {v: float(((design(np.array([v])) @ post.cov) * design(np.array([v]))).sum()) for v in (0.0, 1.5)}
    doc.text(f"""
        The exact predictive variance of a new y at x is E[σ²] (1 + xᵀV_n x): the noise part
        E[σ²] = {fmt(noise_var, 3)} is the same everywhere, the part from not knowing the line
        grows away from the data. At x = 0 the line's share of the predictive variance is
        {doc.number('line_share_x0', quad[0.0] / (1 + quad[0.0]), 3)}, at x = 1.5 it is
        {doc.number('line_share_x1_5', quad[1.5] / (1 + quad[1.5]), 3)}.
        """)
    x_new, y_new = simulate(s, s["test_points"], np.random.default_rng(seed + 1))
    band = predictive_t(post, x_new, noise=True).ppf([[0.05], [0.95]])
    cover_new = float(np.mean((y_new >= band[0]) & (y_new <= band[1])))
    band_obs = predictive_t(post, x, noise=True).ppf([[0.05], [0.95]])
    cover_obs = float(np.mean((y >= band_obs[0]) & (y <= band_obs[1])))
    tol = 3 * math.sqrt(0.9 * 0.1 / s["test_points"])  # 3 binomial sds of an honest coverage
    doc.text(f"""
        Calibration: of {s['test_points']} fresh points drawn from the true line,
        {doc.number('coverage_90_new_points', cover_new, 3)} fall inside their 90% predictive
        interval ({int(round(cover_obs * n_all))} of the {n_all} observed points do). An honest
        interval covers 0.9 ± {fmt(tol, 2)} of {s['test_points']} points (three binomial sds).
        """)
    if abs(cover_new - 0.9) > tol:
        doc.text(f"""
            This coverage is off, and the reason is instructive: a posterior predictive is
            calibrated *on average over the data sets the model could have produced*, not for
            every single data set. These {n_all} points scatter {"less" if _sigma_mean(post) <
            s['noise'] else "more"} than the truth does (E[σ | y] = {fmt(_sigma_mean(post), 3)}
            against the true σ = {fmt(s['noise'])}), so the intervals are
            {"too narrow" if cover_new < 0.9 else "too wide"} for new data. More points would
            fix it; a different seed gives a different small sample and a different error.
            """)
    rep = fit.posterior_predictive()["y"].reshape(-1, n_all)
    resid_rep = rep - rep.mean(-1, keepdims=True)
    tests = [("sd of y", rep.std(-1), float(y.std())),
             ("largest |y − mean y|", np.abs(resid_rep).max(-1), float(np.abs(y - y.mean()).max())),
             ("correlation of x and y", _corr(x, rep), float(np.corrcoef(x, y)[0, 1]))]
    doc.text("""
        Posterior predictive checks: each posterior draw simulates a replicate of all the data
        at the observed x (`fit.posterior_predictive()`); p = P(T(y_rep) ≥ T(y)). Values near 0
        or 1 would say the model cannot reproduce that feature of the data.
        """)
    doc.table([{"statistic T": name, "observed": obs, "replicates' mean": float(r.mean()),
                "p-value": doc.record(f"ppc_pvalue_{i}", ppc_pvalue(r, obs))}
               for i, (name, r, obs) in enumerate(tests)])

    doc.heading("What the data changed")
    pm, qm = beta_marginal(prior), beta_marginal(post)
    rows = []
    for j, label in enumerate(["β₀ (intercept)", "β₁ (slope)"]):
        v0, v1 = float(pm.variance[j]), float(qm.variance[j])
        rows.append({"parameter": label, "prior sd": math.sqrt(v0), "posterior sd": math.sqrt(v1),
                     "prior variance removed": doc.record(f"variance_removed_beta{j}", 1 - v1 / v0)})
    sig = [np.sqrt(stats.invgamma.ppf([0.05, 0.95], float(p.concentration), scale=float(p.rate)))
           for p in (prior, post)]
    doc.table(rows)
    doc.text(f"""
        - After {n_all} points the coefficients' posterior sds are
          {fmt(rows[0]['posterior sd'] / rows[0]['prior sd'], 2)} (intercept) and
          {fmt(rows[1]['posterior sd'] / rows[1]['prior sd'], 2)} (slope) of their prior sds.
        - The noise sd σ: 90% prior interval [{fmt(sig[0][0], 3)}, {fmt(sig[0][1], 3)}], 90%
          posterior interval [{fmt(sig[1][0], 3)}, {fmt(sig[1][1], 3)}] (true
          {fmt(s['noise'])}).
        - Intercept and slope were independent a priori; a posteriori their correlation is
          {doc.number('posterior_corr_beta', float(post.cov[0, 1] / post.cov.diagonal().prod().sqrt()), 3)}
          (it is zero only when the x's are centred at 0).
        - In total the data supplied KL(posterior ‖ prior) =
          {doc.number('kl_posterior_prior_nats', nig_kl(post, prior), 3)} nats of information.
        """)


def _sigma_mean(post: NIGPosterior) -> float:
    """E[σ] under σ² ~ InvGamma(a, b): sqrt(b) Γ(a − ½) / Γ(a)."""
    a = float(post.concentration)
    return math.sqrt(float(post.rate)) * math.exp(math.lgamma(a - 0.5) - math.lgamma(a))


def _corr(x: np.ndarray, rep: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    rc = rep - rep.mean(-1, keepdims=True)
    return (rc @ xc) / np.sqrt((rc**2).sum(-1) * (xc**2).sum())
