"""PNG figures for the report: sampling diagnostics, posterior vs truth, predictive checks.

One of the two modules that import ArviZ (with ``zoo.diagnostics``). Every function writes its
PNG into ``folder`` and returns the file name, so the report links figures relatively. The Agg
backend keeps figures working without a display and in subprocesses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

MAX_COMPONENTS = 9  # scalar components per figure; beyond this a figure stops being readable
DPI = 80
COLORS = {"nuts": "C0", "svi": "C1", "laplace": "C2", "chees": "C3"}


def _save(fig, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _figure_of(axes) -> Any:
    return np.asarray(axes).ravel()[0].figure


def _plot_vars(fit) -> list[str]:
    """Latent sites to draw, smallest first, until MAX_COMPONENTS scalars are used."""
    sizes = {n: int(np.prod(fit.posterior[n].shape[2:], dtype=int)) for n in fit.latent_names}
    chosen, used = [], 0
    for name in sorted(sizes, key=lambda n: (sizes[n], fit.latent_names.index(n))):
        if used + sizes[name] > MAX_COMPONENTS and chosen:
            break
        chosen.append(name)
        used += sizes[name]
    return [n for n in fit.latent_names if n in chosen]


def sampling_figure(fit, folder: Path, stem: str) -> str:
    """Rank plots for several chains (uniform ranks = chains agree), trace plots otherwise."""
    idata = fit.to_inference_data()
    names = _plot_vars(fit)
    if fit.num_chains > 1:
        axes = az.plot_rank(idata, var_names=names, kind="bars")
        fig = _figure_of(axes)
        fig.suptitle(f"{fit.model} / {fit.method}: rank plots", y=1.02)
        return _save(fig, folder, f"{stem}__rank.png")
    axes = az.plot_trace(idata, var_names=names, compact=True)
    fig = _figure_of(axes)
    fig.suptitle(f"{fit.model} / {fit.method}: draws", y=1.02)
    return _save(fig, folder, f"{stem}__trace.png")


def divergence_figure(fit, folder: Path, stem: str) -> str | None:
    """Pair plot with divergent transitions marked, drawn only when there are some: where
    they cluster (e.g. the neck of the eight-schools funnel at small tau) is the diagnosis."""
    diverging = fit.sample_stats.get("diverging")
    if diverging is None or not np.asarray(diverging).any():
        return None
    names = [n for n in fit.latent_names if fit.posterior[n].ndim <= 3][:4]  # scalars and vectors
    coords = {f"{n}_dim_0": [0] for n in names if fit.posterior[n].ndim == 3}  # first element only
    if len(names) < 2 and not coords:
        return None
    axes = az.plot_pair(fit.to_inference_data(), var_names=names, coords=coords, divergences=True,
                        kind="scatter", scatter_kwargs={"alpha": 0.3, "s": 4})
    fig = _figure_of(axes)
    n = int(np.asarray(diverging).sum())
    fig.suptitle(f"{fit.model} / {fit.method}: {n} divergent transitions (marked)", y=1.02)
    return _save(fig, folder, f"{stem}__divergences.png")


def ppc_figure(fit, folder: Path, stem: str, seed: int = 0) -> str | None:
    """Posterior predictive check: replicated data against the observed data."""
    idata = fit.to_inference_data()
    if "posterior_predictive" not in idata.groups() or "observed_data" not in idata.groups():
        return None
    axes = az.plot_ppc(idata, num_pp_samples=50, random_seed=seed)
    fig = _figure_of(axes)
    fig.suptitle(f"{fit.model} / {fit.method}: posterior predictive check", y=1.02)
    return _save(fig, folder, f"{stem}__ppc.png")


def elbo_figure(fit, folder: Path, stem: str) -> str | None:
    """The ELBO per step of an SVI fit (a curve still rising means it stopped too early)."""
    elbo = fit.info.get("elbo")
    if elbo is None or len(elbo) == 0:
        return None
    values = np.asarray(elbo, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3))
    steps = np.arange(1, len(values) + 1)
    ax.plot(steps, values, lw=0.5, alpha=0.5)
    window = max(1, len(values) // 50)  # a running mean shows the trend through the noise
    if window > 1:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.2, color="C3", label=f"running mean ({window} steps)")
        ax.legend(fontsize=8, loc="lower right")
    lo, hi = np.percentile(values[len(values) // 10 :], [1, 100])  # skip the early steep part
    if np.isfinite(lo) and hi > lo:
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO")
    ax.set_title(f"{fit.model} / {fit.method}: ELBO")
    return _save(fig, folder, f"{stem}__elbo.png")


# -- posterior densities against the truth --------------------------------------------------
def _components(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in np.ndindex(*shape)] if shape else [()]


def _label(site: str, idx: tuple[int, ...]) -> str:
    return site + (f"[{','.join(map(str, idx))}]" if idx else "")


def _exact_density(dist, idx: tuple[int, ...], grid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Marginal density of one component of a batch-shaped distribution on ``grid``."""
    if tuple(getattr(dist, "event_shape", ())) != ():
        return None
    dtype = getattr(dist, "mean", torch.zeros(())).dtype
    x = torch.as_tensor(grid, dtype=dtype).reshape((-1,) + (1,) * len(shape)).expand((len(grid),) + shape)
    with torch.no_grad():
        try:
            lp = dist.log_prob(x)
        except (ValueError, RuntimeError):  # grid outside the support
            return None
    return np.exp(lp[(slice(None),) + idx].cpu().numpy())


def density_figure(
    model: str,
    fits: Sequence,
    folder: Path,
    stem: str,
    exact: Mapping[str, Any] | None = None,
    reference: Mapping[str, np.ndarray] | None = None,
) -> str | None:
    """Each method's marginal posterior against the exact density and/or reference draws."""
    truth = exact if exact is not None else reference
    if not truth or not fits:
        return None
    panels = []
    sites = [s for s in truth if s in fits[0].posterior]
    for site in sorted(sites, key=lambda s: fits[0].posterior[s].ndim):  # scalars (mu, tau) first
        shape = tuple(fits[0].posterior[site].shape[2:])
        panels += [(site, idx, shape) for idx in _components(shape)]
    panels = panels[:MAX_COMPONENTS]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 2.8 * nrows), squeeze=False)
    for ax, (site, idx, shape) in zip(axes.ravel(), panels):
        samples = {f.method: f.posterior[site][(slice(None), slice(None)) + idx].ravel() for f in fits}
        if reference is not None and site in reference:
            samples["reference"] = np.asarray(reference[site])[(slice(None), slice(None)) + idx].ravel()
        pooled = np.concatenate(list(samples.values()))
        lo, hi = np.percentile(pooled, [0.5, 99.5])
        bins = np.linspace(lo, hi, 41)
        for name, x in samples.items():
            if name == "reference":
                ax.hist(x, bins=bins, density=True, color="0.8", label="reference")
            else:
                ax.hist(x, bins=bins, density=True, histtype="step", lw=1.2, color=COLORS.get(name),
                        label=name)
        if exact is not None and site in exact:
            grid = np.linspace(lo, hi, 200)
            dens = _exact_density(exact[site], idx, grid, shape)
            if dens is not None:
                ax.plot(grid, dens, "k--", lw=1.2, label="exact")
        ax.set_title(_label(site, idx), fontsize=10)
        ax.set_yticks([])
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=8)
    kind = "exact posterior" if exact is not None else "reference draws"
    fig.suptitle(f"{model}: posterior vs {kind}")
    fig.tight_layout()
    return _save(fig, folder, f"{stem}__vs_{'exact' if exact is not None else 'reference'}.png")


# -- model comparison -----------------------------------------------------------------------
def bayes_factor_figure(rows: Sequence, best: str, folder: Path) -> str | None:
    """log BF of each model against ``best``, one marker per estimator with ±2 MCSE bars;
    each estimator's BF uses its own estimate for the best model, so the markers compare the
    estimators on the same question."""
    models = list(dict.fromkeys(r.model for r in rows))
    names = list(dict.fromkeys(r.name for r in rows if r.evidence is not None))
    ref = {r.name: r.evidence for r in rows if r.model == best and r.evidence is not None}
    names = [n for n in names if n in ref]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(models) + 2), 3.5))
    width = 0.6 / max(1, len(names))
    for k, name in enumerate(names):
        xs, ys, errs = [], [], []
        for i, model in enumerate(models):
            ev = next((r.evidence for r in rows if r.model == model and r.name == name
                       and r.evidence is not None), None)
            if ev is None:
                continue
            xs.append(i + (k - (len(names) - 1) / 2) * width)
            ys.append(ev.value - ref[name].value)
            errs.append(2 * float(np.hypot(ev.mcse, ref[name].mcse)))
        ax.errorbar(xs, ys, yerr=errs, fmt="os^Dv<>"[k % 7], capsize=3, ls="none", label=name)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_ylabel(f"log BF vs {best}")
    ax.set_title("log Bayes factor against the best model (±2 MCSE)")
    ax.legend(fontsize=8)
    return _save(fig, folder, "bayes_factors.png")
