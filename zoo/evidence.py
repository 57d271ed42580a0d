"""Log marginal likelihood (evidence) estimators, each with a Monte Carlo standard error.

    log Z = log ∫ p(y | θ) p(θ) dθ

- ``exact``      the model's closed form (conjugate models); MCSE 0.
- ``laplace``    log p̃(û) + (d/2) log 2π − ½ log|H| in unconstrained space (Jacobian in p̃):
                 exact for Gaussian posteriors, O(1/n) otherwise; deterministic, MCSE 0.
- ``importance`` Z = E_q[p̃/q] with the SVI guide or the Laplace Gaussian as q; reports the
                 ESS, Pareto k̂ (PSIS; unreliable above 0.7) and the ELBO (a lower bound).
- ``bridge``     bridge sampling from MCMC draws (Meng & Wong 1996; Gronau et al. 2017):
                 the first half of each chain fits a Gaussian proposal (``normal``, or
                 ``warp3``: Meng & Schilling's symmetrised posterior), the second half and as
                 many proposal draws enter the optimal bridge iteration; the relative MSE of
                 Frühwirth-Schnatter (2004), with the posterior term corrected for
                 autocorrelation, gives the MCSE of log Z.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from .errors import ConvergenceWarning, ZooError, unknown
from .fit import default_dtype
from .logdensity import LogJoint
from .registry import MCMC_METHODS

if TYPE_CHECKING:
    from .fit import Fit

ESTIMATORS = ("exact", "laplace", "importance", "bridge")
PARETO_K_MAX = 0.7
MIN_BRIDGE_DRAWS = 200  # per half; fewer gives a proposal fit and an error estimate of noise


@dataclass(frozen=True)
class Evidence:
    """An estimate of log Z with its Monte Carlo standard error."""

    value: float
    mcse: float
    method: str
    diagnostics: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"log Z = {self.value:.4f} ± {self.mcse:.4f} ({self.method})"


def _warn(fit: "Fit", message: str, out: list[str]) -> None:
    out.append(message)
    warnings.warn(f"{fit.model} {fit.method} evidence: {message}", ConvergenceWarning, stacklevel=3)


# -- exact and Laplace -----------------------------------------------------------------------

def exact(fit: "Fit") -> Evidence:
    if fit.spec.exact_log_evidence is None:
        raise ZooError(f"model {fit.model!r} has no closed-form evidence; use method "
                       "'bridge' (NUTS fit), 'importance' (SVI or Laplace fit) or 'laplace'")
    with default_dtype(fit.dtype):
        return Evidence(float(fit.spec.exact_log_evidence(**fit.data)), 0.0, "exact")


def laplace(fit: "Fit") -> Evidence:
    if fit.method != "laplace":
        raise ZooError(f"the laplace evidence needs a Laplace fit (this one is {fit.method!r}); "
                       "fit with method='laplace', or use 'bridge' for a NUTS fit")
    d = fit.info["dim"]
    value = fit.info["log_joint_at_mode"] + 0.5 * d * math.log(2 * math.pi) - 0.5 * fit.info["log_det_hessian"]
    return Evidence(value, 0.0, "laplace", {"dim": d})


# -- importance sampling ---------------------------------------------------------------------

def _proposal_draws(fit: "Fit", lj: LogJoint, num_draws: int, seed: int):
    """Draws from q and log p̃ − log q at them, both in unconstrained coordinates."""
    gen = torch.Generator().manual_seed(seed)
    if fit.method == "laplace":
        mode, H = fit.info["unconstrained_mode"], fit.info["hessian"]
        q = torch.distributions.MultivariateNormal(mode, precision_matrix=H)
        eps = torch.randn((num_draws, mode.numel()), generator=gen, dtype=mode.dtype)
        u = mode + torch.linalg.solve_triangular(torch.linalg.cholesky(H).T, eps.T, upper=True).T
        return lj.unconstrained(u) - q.log_prob(u)
    if fit.method == "svi":
        if fit.settings["guide"] == "delta":
            raise ZooError("a delta (MAP) guide has no density to weight by; use guide 'normal', "
                           "'mvn' or 'lowrank_mvn', or method 'laplace'")
        import pyro

        from . import tracing

        pyro.set_rng_seed(seed)
        with fit.guide_scope():
            draws, log_q = tracing.guide_draws(fit.guide, fit.data, num_draws, lj.latents,
                                               lj.max_plate_nesting)
        return lj.constrained(draws) - log_q
    raise ZooError(f"importance sampling needs an SVI or Laplace fit as proposal (this one is "
                   f"{fit.method!r}); for a NUTS fit use method 'bridge'")


def importance(fit: "Fit", num_draws: int = 10_000, seed: int = 0) -> Evidence:
    from . import diagnostics

    with default_dtype(fit.dtype):
        lj = LogJoint(fit.spec, fit.data)
        log_w = _proposal_draws(fit, lj, num_draws, seed).detach().cpu().numpy()
    if not np.isfinite(log_w).all():
        raise ZooError(f"importance weights of model {fit.model!r} are not finite: the proposal "
                       "puts mass where the model has none")
    m = log_w.max()
    w = np.exp(log_w - m)
    value = m + math.log(w.mean())
    mcse = w.std(ddof=1) / (math.sqrt(num_draws) * w.mean())  # delta method: sd(Ẑ)/Z
    ess = w.sum() ** 2 / (w**2).sum()
    k_hat = diagnostics.pareto_k(log_w)
    elbo = float(log_w.mean())
    out: list[str] = []
    if k_hat > PARETO_K_MAX:
        _warn(fit, f"Pareto k̂ = {k_hat:.2f} > {PARETO_K_MAX}: the importance weights have a "
              "heavy tail and the estimate and its MCSE are unreliable (the proposal misses part "
              "of the posterior); use 'bridge' on a NUTS fit", out)
    diag = {"ess": float(ess), "pareto_k": k_hat, "num_draws": num_draws, "elbo": elbo,
            "elbo_mcse": float(log_w.std(ddof=1) / math.sqrt(num_draws))}
    return Evidence(float(value), float(mcse), "importance", diag, tuple(out))


# -- bridge sampling -------------------------------------------------------------------------

def _bridge_iterate(l1: np.ndarray, l2: np.ndarray, s1: float, s2: float,
                    tol: float, max_iter: int) -> tuple[float, int]:
    """Meng & Wong's fixed point for log r = log Z − l*, from the log ratios
    l = log p̃ − log g at posterior draws (l1) and proposal draws (l2)."""
    lstar = float(np.median(l1))
    e1, e2 = np.exp(l1 - lstar), np.exp(l2 - lstar)
    r = 1.0
    for it in range(1, max_iter + 1):
        num = np.mean(e2 / (s1 * e2 + s2 * r))
        den = np.mean(1.0 / (s1 * e1 + s2 * r))
        r_new = num / den
        if abs(r_new - r) / r_new < tol:
            return math.log(r_new) + lstar, it
        r = r_new
    raise ZooError(f"bridge sampling did not converge in {max_iter} iterations; raise max_iter")


def _relative_mse(l1, l2, log_z, s1, s2, n1_eff_factor) -> float:
    """Frühwirth-Schnatter's relative MSE of Ẑ: iid proposal term + autocorrelated posterior
    term (variance times the integrated autocorrelation time of f2)."""
    p1, p2 = np.exp(l1 - log_z), np.exp(l2 - log_z)  # p̃/(Z g) at posterior and proposal draws
    f1 = p2 / (s1 * p2 + s2)  # at proposal draws
    f2 = 1.0 / (s1 * p1 + s2)  # at posterior draws (g / (s1 p + s2 g) divided through by g)
    term1 = f1.var(ddof=1) / f1.mean() ** 2 / f1.size
    term2 = f2.var(ddof=1) / f2.mean() ** 2 / f2.size * n1_eff_factor(f2)
    return float(term1 + term2)


def bridge(fit: "Fit", proposal: str = "normal", tol: float = 1e-10, max_iter: int = 1000,
           seed: int = 0) -> Evidence:
    from . import diagnostics

    if fit.method not in MCMC_METHODS:
        raise ZooError(f"bridge sampling needs MCMC draws (a chees or NUTS fit; this one is {fit.method!r}); "
                       "use 'importance' or 'laplace' for SVI and Laplace fits")
    if proposal not in ("normal", "warp3"):
        raise unknown("bridge proposal", proposal, ("normal", "warp3"))
    c, half, half_chains = fit.num_chains, fit.num_draws // 2, fit.num_chains // 2
    if half < MIN_BRIDGE_DRAWS and half_chains * fit.num_draws < MIN_BRIDGE_DRAWS:
        raise ZooError(f"bridge sampling needs {2 * MIN_BRIDGE_DRAWS} draws per chain, or "
                       f"{2 * MIN_BRIDGE_DRAWS} in all over at least 2 chains (this fit has "
                       f"{c} x {fit.num_draws}); raise num_samples")
    with default_dtype(fit.dtype):
        lj = LogJoint(fit.spec, fit.data)
        u = lj.to_unconstrained(fit.draws(lj.latents)).reshape(c, fit.num_draws, -1)
        if half >= MIN_BRIDGE_DRAWS:  # long chains: their first halves fit the proposal
            fit_half, iter_half = u[:, :half].reshape(-1, lj.dim), u[:, half : 2 * half]
        else:  # many short chains (chees): half of the chains fit it
            fit_half, iter_half = u[:half_chains].reshape(-1, lj.dim), u[half_chains : 2 * half_chains]
        c, half = iter_half.shape[:2]
        mu = fit_half.mean(0)
        cov = torch.cov(fit_half.T).reshape(lj.dim, lj.dim)
        L = torch.linalg.cholesky(cov + 1e-10 * torch.eye(lj.dim, dtype=cov.dtype))
        gen = torch.Generator().manual_seed(seed)
        n2 = c * half
        eta2 = torch.randn((n2, lj.dim), generator=gen, dtype=u.dtype)
        std = torch.distributions.Normal(torch.zeros((), dtype=u.dtype), 1.0)
        post = iter_half.reshape(-1, lj.dim)
        if proposal == "normal":
            # g = N(mu, LLᵀ): l = log p̃(θ) − log g(θ)
            g = torch.distributions.MultivariateNormal(mu, scale_tril=L)
            xi = mu + eta2 @ L.T
            l1, l2 = lj.unconstrained(post) - g.log_prob(post), lj.unconstrained(xi) - g.log_prob(xi)
        else:
            # warp3: q(η) = |L|/2 [p̃(mu + Lη) + p̃(mu − Lη)], same integral Z; g = N(0, I).
            log_det_L = torch.log(torch.diagonal(L)).sum()

            def log_q(eta):
                plus, minus = lj.unconstrained(mu + eta @ L.T), lj.unconstrained(mu - eta @ L.T)
                return torch.logaddexp(plus, minus) - math.log(2) + log_det_L

            eta1 = torch.linalg.solve_triangular(L, (post - mu).T, upper=False).T
            l1 = log_q(eta1) - std.log_prob(eta1).sum(-1)
            l2 = log_q(eta2) - std.log_prob(eta2).sum(-1)
    l1, l2 = l1.detach().cpu().numpy(), l2.detach().cpu().numpy()
    if not (np.isfinite(l1).all() and np.isfinite(l2).all()):
        raise ZooError(f"bridge sampling on model {fit.model!r}: non-finite log density at some "
                       "draws; check the model's support")
    # s1 from the effective number of posterior draws (bridgesampling's use_neff=TRUE).
    n1 = l1.size
    ess1 = float(diagnostics.ess(l1.reshape(c, half)))
    s1, s2 = ess1 / (ess1 + n2), n2 / (ess1 + n2)
    log_z, iterations = _bridge_iterate(l1, l2, s1, s2, tol, max_iter)

    def tau(f2):  # integrated autocorrelation time from ArviZ's multi-chain ESS
        return n1 / float(diagnostics.ess(f2.reshape(c, half)))

    re2 = _relative_mse(l1, l2, log_z, s1, s2, tau)
    out: list[str] = []
    r_hat = diagnostics.max_rhat(u.cpu().numpy())
    if r_hat > 1.05:
        _warn(fit, f"chains disagree (max R-hat {r_hat:.2f} in unconstrained space): the "
              "posterior may be multimodal and a one-Gaussian proposal can miss modes "
              "(log Z low by up to log #modes); run more chains or use a mixture model check", out)
    diag = {"proposal": proposal, "iterations": iterations, "n_posterior": n1, "n_proposal": n2,
            "ess_posterior": ess1, "relative_mse": re2, "max_rhat_unconstrained": r_hat}
    return Evidence(float(log_z), float(math.sqrt(re2)), "bridge", diag, tuple(out))


_ESTIMATORS = {"exact": exact, "laplace": laplace, "importance": importance, "bridge": bridge}
# The fit each estimator needs when zoo.log_evidence runs one itself.
_FIT_METHOD = {"exact": "laplace", "laplace": "laplace", "importance": "svi", "bridge": "mcmc"}


def _check_proper(fit: "Fit") -> None:
    if fit.improper_sites:
        raise ZooError(f"site {fit.improper_sites[0]!r} of model {fit.model!r} has an improper "
                       "prior, so the evidence is not defined (Bayes factors would be "
                       "arbitrary); give it a proper prior")


def estimate(fit: "Fit", method: str | None = None, **kwargs) -> Evidence:
    """log Z from a fit: ``bridge`` for MCMC, ``importance`` for SVI, ``laplace`` for Laplace
    by default; ``exact`` for any fit of a model with a closed form."""
    method = method or {"chees": "bridge", "nuts": "bridge", "svi": "importance",
                         "laplace": "laplace"}[fit.method]
    if method not in _ESTIMATORS:
        raise unknown("evidence method", method, _ESTIMATORS)
    _check_proper(fit)
    result = _ESTIMATORS[method](fit, **kwargs)
    if method != "exact" and not fit.converged:
        # An estimate built on draws or a mode that failed their checks inherits their bias
        # (e.g. bridge sampling on a divergent NUTS fit misses the funnel's neck).
        failed = ", ".join(fit.checks().query("kind == 'convergence' and not passed")["check"])
        out: list[str] = list(result.warnings)
        _warn(fit, f"the {fit.method} fit failed its convergence checks ({failed}); this "
              "estimate inherits that bias and its MCSE understates the error", out)
        result = dataclasses.replace(result, warnings=tuple(out))
    return result


def log_evidence(model, data: Mapping, method: str = "bridge", seed: int = 0,
                 estimator: Mapping | None = None, **settings) -> Evidence:
    """Fit ``model`` the way ``method`` needs (NUTS for bridge, SVI for importance, Laplace
    for laplace) with ``settings``, then estimate log Z; ``estimator`` holds the estimator's
    own options (e.g. ``{"proposal": "warp3"}``)."""
    from .inference import fit as run_fit

    if method not in _ESTIMATORS:
        raise unknown("evidence method", method, _ESTIMATORS)
    if method == "bridge":
        settings.setdefault("num_samples", 2000)  # two halves of 1000 per chain
    fitted = run_fit(model, data, method=_FIT_METHOD[method], seed=seed, **settings)
    return estimate(fitted, method, **dict(estimator or {}))
