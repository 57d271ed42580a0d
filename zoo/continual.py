"""Sequential Bayesian updating of the conjugate models: the posterior after batch t is the prior
for batch t+1.

When the batches y_1, ..., y_T are independent given the parameters θ,

    p(θ | y_1..t) ∝ p(y_t | θ) p(θ | y_1..t−1),

so updating batch by batch ends at the posterior of all the data at once, and the evidence
factorises by the chain rule into one-step-ahead (prequential) predictive densities,

    log p(y_1..T) = Σ_t log p(y_t | y_1..t−1),

each the evidence of batch t under the current prior. For a conjugate model both are closed
forms in the prior's parameters, so the belief is a small tuple:

- ``beta_binomial``: Beta(a, b) → Beta(a + Σy, b + Σ(n − y));
- ``normal_normal``: Normal(m, s) → Normal, precisions add (known noise);
- Bayesian linear regression: NIG(m, V, a, b) → NIG (``zoo.models.conjugate.nig_update``; the
  registered ``linear_regression`` has a zero-mean isotropic prior, a posterior is neither).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    import pandas as pd

from .errors import unknown
from .models.conjugate import (NIGPosterior, beta_binomial_exact_log_evidence,
                               beta_binomial_exact_posterior, nig_update,
                               normal_normal_exact_log_evidence, normal_normal_exact_posterior)

MODELS = ("beta_binomial", "normal_normal", "linear_regression")


class BetaBelief(NamedTuple):
    """p ~ Beta(a, b)."""

    a: Tensor
    b: Tensor


class NormalBelief(NamedTuple):
    """mu ~ Normal(loc, scale)."""

    loc: Tensor
    scale: Tensor


Belief = Any  # BetaBelief | NormalBelief | NIGPosterior


def update_beta_binomial(belief: BetaBelief, batch: Mapping[str, Tensor]) -> tuple[BetaBelief, float]:
    """(posterior, log p(batch | belief)) for counts y of n trials."""
    post = beta_binomial_exact_posterior(batch["n"], batch["y"], belief.a, belief.b)["p"]
    log_pred = beta_binomial_exact_log_evidence(batch["n"], batch["y"], belief.a, belief.b)
    return BetaBelief(post.concentration1, post.concentration0), log_pred


def update_normal_normal(belief: NormalBelief,
                         batch: Mapping[str, Tensor]) -> tuple[NormalBelief, float]:
    """(posterior, log p(batch | belief)) for observations y with known noise sd sigma."""
    args = {"y": batch["y"], "sigma": batch["sigma"], "prior_loc": belief.loc,
            "prior_scale": belief.scale}
    post = normal_normal_exact_posterior(**args)["mu"]
    return NormalBelief(post.loc, post.scale), normal_normal_exact_log_evidence(**args)


def nig_log_predictive(x: Tensor, y: Tensor, prior: NIGPosterior) -> float:
    """log p(y | x) under a general NIG prior (a multivariate Student t in y):
    −N/2 log 2π + (log|V_n| − log|V0|)/2 + a0 log b0 − a_n log b_n + log Γ(a_n) − log Γ(a0)."""
    post = nig_update(x, y, prior)
    return float(-0.5 * x.shape[0] * math.log(2 * math.pi)
                 + 0.5 * (torch.linalg.slogdet(post.cov)[1] - torch.linalg.slogdet(prior.cov)[1])
                 + prior.concentration * torch.log(prior.rate)
                 - post.concentration * torch.log(post.rate)
                 + torch.lgamma(post.concentration) - torch.lgamma(prior.concentration))


def update_nig(belief: NIGPosterior, batch: Mapping[str, Tensor]) -> tuple[NIGPosterior, float]:
    """(posterior, log p(batch | belief)) for a design matrix x and targets y."""
    x, y = batch["x"], batch["y"]
    return nig_update(x, y, belief), nig_log_predictive(x, y, belief)


UPDATES: dict[str, Callable] = {"beta_binomial": update_beta_binomial,
                                "normal_normal": update_normal_normal,
                                "linear_regression": update_nig}


def prior_belief(model: str, **hyper: Any) -> Belief:
    """The registered model's prior as a belief, from its hyperparameters (the model's own
    keyword arguments; defaults as in the model). For linear_regression ``num_features`` too."""
    dt = torch.float64
    if model == "beta_binomial":
        return BetaBelief(torch.tensor(float(hyper.get("prior_a", 1.0)), dtype=dt),
                          torch.tensor(float(hyper.get("prior_b", 1.0)), dtype=dt))
    if model == "normal_normal":
        return NormalBelief(torch.tensor(float(hyper.get("prior_loc", 0.0)), dtype=dt),
                            torch.tensor(float(hyper.get("prior_scale", 10.0)), dtype=dt))
    if model == "linear_regression":
        from .models.regression import PRIOR_A, PRIOR_B, PRIOR_SCALE

        d = int(hyper["num_features"])
        scale = float(hyper.get("prior_scale", PRIOR_SCALE))
        return NIGPosterior(torch.zeros(d, dtype=dt), torch.eye(d, dtype=dt) * scale**2,
                            torch.tensor(float(hyper.get("prior_a", PRIOR_A)), dtype=dt),
                            torch.tensor(float(hyper.get("prior_b", PRIOR_B)), dtype=dt))
    raise unknown("conjugate model", model, MODELS)


def sequential(model: str, prior: Belief, batches: Sequence[Mapping[str, Tensor]]
               ) -> tuple[list[Belief], list[float]]:
    """Update batch by batch: the beliefs [prior, after batch 1, ..., after batch T] and the
    one-step-ahead log predictive of each batch (their sum is log p(all data)). In float64,
    like every closed form of the zoo."""
    from .fit import default_dtype

    if model not in UPDATES:
        raise unknown("conjugate model", model, MODELS)
    beliefs, log_preds = [prior], []
    with default_dtype(torch.float64):  # the closed forms build their constants in it
        for batch in batches:
            batch = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in batch.items()}
            belief, log_pred = UPDATES[model](beliefs[-1], batch)
            beliefs.append(belief)
            log_preds.append(log_pred)
    return beliefs, log_preds


def split(data: Mapping[str, Any], num_batches: int, rows: Sequence[str]) -> list[dict[str, Any]]:
    """``data`` cut into ``num_batches`` consecutive batches along the first dim of ``rows``;
    every other key (e.g. a scalar sigma) is copied into each batch."""
    pieces = {k: torch.tensor_split(torch.as_tensor(data[k]), num_batches) for k in rows}
    return [{**{k: v for k, v in data.items() if k not in rows}, **{k: pieces[k][t] for k in rows}}
            for t in range(num_batches)]


# -- sequential vs all at once on the registered data sets ------------------------------------
DATASETS = {"beta_binomial": ("binomial_synthetic", "groups", ("n", "y")),
            "normal_normal": ("normal_synthetic", "n", ("y",)),
            "linear_regression": ("linear_synthetic", "n", ("x", "y"))}
TOLERANCE = 1e-10  # float64 round-off over a few batches is ~1e-15 relative


def _flat(belief: Belief) -> dict[str, Tensor]:
    """A belief's parameters by name, for the comparison table."""
    if isinstance(belief, NIGPosterior):
        return {"m_n": belief.loc, "V_n": belief.cov, "a_n": belief.concentration, "b_n": belief.rate}
    return {k: torch.as_tensor(v) for k, v in belief._asdict().items()}


def batch_posterior(model: str, data: Mapping[str, Any]) -> tuple[Belief, float]:
    """The posterior of all the data at once and its log evidence, from the registered model's
    own closed forms (``spec.exact_posterior`` / ``exact_log_evidence``; ``nig_posterior`` for
    linear_regression, whose exact_posterior gives marginals, not the NIG parameters)."""
    from .models.conjugate import nig_posterior
    from .registry import get_model

    spec = get_model(model)
    evidence = spec.exact_log_evidence(**data)
    if model == "beta_binomial":
        p = spec.exact_posterior(**data)["p"]
        return BetaBelief(p.concentration1, p.concentration0), evidence
    if model == "normal_normal":
        mu = spec.exact_posterior(**data)["mu"]
        return NormalBelief(mu.loc, mu.scale), evidence
    from .models.regression import PRIOR_A, PRIOR_B, PRIOR_SCALE

    return nig_posterior(data["x"], data["y"], PRIOR_A, PRIOR_B, PRIOR_SCALE), evidence


def compare_sequential(num_batches: int, rows_per_batch: int, seed: int
                       ) -> tuple["pd.DataFrame", dict[str, list[Belief]]]:
    """Each conjugate model on its registered synthetic data set (``rows_per_batch`` ×
    ``num_batches`` rows, ``seed``): the belief after the last batch against the all-at-once
    posterior, parameter by parameter, and Σ_t log p(y_t | y_<t) against log p(y). Returns the
    table and every model's beliefs after each batch (for the figure)."""
    import pandas as pd

    from .fit import default_dtype
    from .registry import load_dataset

    rows, history = [], {}
    with default_dtype(torch.float64):
        for model, (dataset, size, cut) in DATASETS.items():
            data = load_dataset(dataset, **{size: num_batches * rows_per_batch, "seed": seed})
            extra = {"num_features": data["x"].shape[1]} if "x" in data else {}
            beliefs, log_preds = sequential(model, prior_belief(model, **extra),
                                            split(data, num_batches, cut))
            exact, evidence = batch_posterior(model, data)
            history[model] = beliefs
            seq, ref = _flat(beliefs[-1]), _flat(exact)
            for name in seq:
                diff = float((seq[name] - ref[name]).abs().max())
                shown = ref[name].reshape(-1).tolist()
                value = (f"{shown[0]:.10g}" if len(shown) == 1 else "(" + ", ".join(
                    f"{v:.4g}" for v in shown[:4]) + (", ...)" if len(shown) > 4 else ")"))
                rows.append({"model": model, "quantity": name, "all at once": value,
                             "max abs(sequential − all at once)": diff})
            rows.append({"model": model, "quantity": "log p(y) = Σ_t log p(y_t ∣ y_<t)",
                         "all at once": f"{evidence:.10g}",
                         "max abs(sequential − all at once)": abs(sum(log_preds) - evidence)})
    table = pd.DataFrame(rows)
    table["within 1e-10"] = ["yes" if d <= TOLERANCE else "**no**"
                             for d in table["max abs(sequential − all at once)"]]
    return table, history


def belief_figure(history: Mapping[str, list[Belief]], path) -> None:
    """The belief after 0, 1, ..., T batches: Beta densities of p, Normal densities of mu and
    the Student-t marginal of the linear regression's slope beta[1]."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pyro.distributions as dist

    from .models.conjugate import nig_marginals

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, (model, beliefs) in zip(axes, history.items()):
        if model == "beta_binomial":
            dens, label = [dist.Beta(b.a, b.b) for b in beliefs], "p"
            c, s = float(dens[1].mean), float(dens[1].stddev)  # after one batch: the widest
            grid = torch.linspace(max(c - 5 * s, 1e-3), min(c + 5 * s, 1 - 1e-3), 400,
                                  dtype=torch.float64)
        elif model == "normal_normal":
            last = beliefs[-1]
            grid = torch.linspace(float(last.loc - 8 * last.scale), float(last.loc + 8 * last.scale),
                                  400, dtype=torch.float64)
            dens, label = [dist.Normal(b.loc, b.scale) for b in beliefs], "mu"
        else:
            marg = [nig_marginals(b)["beta"] for b in beliefs]
            c, s = float(marg[-1].loc[1]), float(marg[-1].scale[1])
            grid = torch.linspace(c - 8 * s, c + 8 * s, 400, dtype=torch.float64)
            dens = [dist.StudentT(m.df[1], m.loc[1], m.scale[1]) for m in marg]
            label = "beta[1]"
        for t, d in enumerate(dens):
            label_t = "prior" if t == 0 else f"after batch {t}" if t == len(dens) - 1 else None
            ax.plot(grid, d.log_prob(grid).exp(), lw=1, label=label_t,
                    color=plt.cm.viridis(t / max(1, len(dens) - 1)))
        ax.set(title=f"{model}: belief after each batch", xlabel=label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
