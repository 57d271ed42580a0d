"""``Fit``: the one result type of every inference method.

Whatever produced it (NUTS, SVI, Laplace), a ``Fit`` holds posterior draws shaped
``(chain, draw, *site_shape)`` on the constrained scale, per-draw sample statistics, the
settings, and the model and data needed to evaluate log-likelihoods and predictions. SVI and
Laplace fits hold draws from their approximate posterior (one chain of ``num_samples`` iid
draws), so every diagnostic downstream is written once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import pyro
import torch

from . import tracing
from .registry import ModelSpec


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run with ``dtype`` as torch's default, restoring the caller's afterwards (Pyro builds
    constants such as ``dist.Normal(0., 5.)`` in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@dataclass
class Fit:
    spec: ModelSpec
    method: str
    posterior: dict[str, np.ndarray]  # latent + deterministic sites, (chain, draw, ...)
    latent_names: list[str]  # the sites inference targeted (conditioning on these suffices)
    sample_stats: dict[str, np.ndarray]  # (chain, draw): diverging, energy, lp, ...
    data: dict[str, Any]  # the prepared model arguments (tensors and scalars)
    observed: dict[str, str]  # observed site -> data key
    settings: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # elbo trace, MAP, Hessian, timings ...
    warnings: list[str] = field(default_factory=list)
    guide: Any = None
    _cache: dict = field(default_factory=dict, repr=False)

    # -- shapes -----------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def num_chains(self) -> int:
        return next(iter(self.posterior.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.posterior.values())).shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.settings.get("dtype", "float64"))

    def draws(self, sites: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Posterior draws flattened over chains: ``site -> tensor (chain*draw, ...)``."""
        names = self.latent_names if sites is None else sites
        return {
            k: torch.as_tensor(self.posterior[k], dtype=self.dtype).reshape(
                (-1,) + self.posterior[k].shape[2:]
            )
            for k in names
        }

    def _unflatten(self, values: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        c, d = self.num_chains, self.num_draws
        return {k: v.detach().cpu().numpy().reshape((c, d) + tuple(v.shape[1:])) for k, v in values.items()}

    def _covariates(self, new_data: Mapping | None = None) -> dict:
        data = {k: v for k, v in self.data.items() if k not in self.observed.values()}
        if new_data:
            from .data import to_tensor

            data.update({k: to_tensor(k, v, self.dtype) for k, v in new_data.items()})
        return data

    # -- model evaluations at the draws -----------------------------------------------------
    def log_likelihood(self) -> dict[str, np.ndarray]:
        """Pointwise log-likelihood per observed site, ``(chain, draw, *obs_shape)``."""
        if "log_likelihood" not in self._cache:
            with default_dtype(self.dtype):
                ll = tracing.evaluate(
                    self.spec.fn,
                    self.draws(),
                    self.data,
                    sites=list(self.observed),
                    log_prob=True,
                    vectorize=self.spec.vectorizable,
                )
            self._cache["log_likelihood"] = self._unflatten(ll)
        return self._cache["log_likelihood"]

    def posterior_predictive(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Replicated data at the observed covariates, one replicate per posterior draw."""
        if "posterior_predictive" not in self._cache:
            draws = self.predict(seed=self.settings.get("seed", 0) if seed is None else seed)
            self._cache["posterior_predictive"] = self._unflatten(draws)
        return self._cache["posterior_predictive"]

    def predict(self, new_data: Mapping | None = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Posterior predictive draws ``site -> (chain*draw, ...)`` at ``new_data``'s covariates
        (the observed keys are dropped so the model samples them)."""
        if seed is not None:
            pyro.set_rng_seed(seed)
        with default_dtype(self.dtype):
            return tracing.evaluate(
                self.spec.fn,
                self.draws(),
                self._covariates(new_data),
                sites=list(self.observed),
                vectorize=self.spec.vectorizable,
            )

    def prior(self, num_samples: int = 500, seed: int | None = None) -> dict[str, np.ndarray]:
        """Prior (latents) and prior predictive (observed sites) draws, ``(1, num_samples, ...)``;
        empty for a model with an improper (flat) prior, which has nothing to draw from."""
        if "prior" not in self._cache and self.improper_sites:
            self._cache["prior"] = {}
        if "prior" not in self._cache:
            pyro.set_rng_seed(self.settings.get("seed", 0) if seed is None else seed)
            with default_dtype(self.dtype):
                draws = tracing.prior_draws(
                    self.spec.fn, self._covariates(), num_samples, vectorize=self.spec.vectorizable
                )
            self._cache["prior"] = {k: v.cpu().numpy()[None] for k, v in draws.items()}
        return self._cache["prior"]

    @property
    def improper_sites(self) -> list[str]:
        """Latent sites with a flat (improper) prior, e.g. a Stan program's parameter with no
        ``~`` statement: no prior draws, evidence or SBC for this model."""
        if "improper" not in self._cache:
            with default_dtype(self.dtype):
                trace = tracing.structure(self.spec.fn, self.data)
            self._cache["improper"] = tracing.improper_sites(trace)
        return self._cache["improper"]

    @contextlib.contextmanager
    def guide_scope(self) -> Iterator[None]:
        """Run code that uses ``self.guide`` with the parameters this fit learned.

        Pyro keeps guide parameters in one global param store, which the next SVI fit clears;
        the fit keeps its own copy and swaps it in here, so an old fit's guide stays valid."""
        store = pyro.get_param_store()
        saved = store.get_state()
        store.set_state(self.info["param_store"])
        try:
            yield
        finally:
            store.set_state(saved)

    # -- diagnostics (ArviZ lives in zoo.diagnostics) ---------------------------------------
    def to_inference_data(self):
        """ArviZ InferenceData: posterior, log_likelihood, posterior_predictive,
        observed_data, sample_stats, prior and prior_predictive."""
        from . import diagnostics

        if "idata" not in self._cache:
            self._cache["idata"] = diagnostics.to_inference_data(self)
        return self._cache["idata"]

    def summary(self, **kwargs):
        """pandas table per scalar parameter: mean, sd, hdi, mcse, ess_bulk, ess_tail, r_hat."""
        from . import diagnostics

        return diagnostics.summary(self, **kwargs)

    def checks(self):
        """Pass/fail convergence checks (like posteriordb's ``checks_made``) as a DataFrame."""
        from . import diagnostics

        return diagnostics.checks(self)

    def log_evidence(self, method: str | None = None, **kwargs):
        """log p(y) with its MCSE: ``exact``, ``laplace``, ``importance`` or ``bridge`` (the
        default is the estimator that fits this fit's method); see ``zoo.evidence``."""
        from . import evidence

        return evidence.estimate(self, method, **kwargs)

    @property
    def converged(self) -> bool:
        """All convergence checks passed (PSIS-LOO's k̂ is model criticism, not convergence)."""
        from . import diagnostics

        table = diagnostics.checks(self, loo=False)
        return bool(table.loc[table["kind"] == "convergence", "passed"].all())

    def __repr__(self) -> str:
        return (
            f"Fit(model={self.model!r}, method={self.method!r}, chains={self.num_chains}, "
            f"draws={self.num_draws}, sites={list(self.posterior)}, warnings={len(self.warnings)})"
        )
