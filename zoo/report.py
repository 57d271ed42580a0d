"""``results/<recipe>/``: report.md, summary.csv, one netCDF per fit, and PNG figures.

Everything is built in a temporary folder beside the destination and moved into place with one
rename, so an interrupted or failing run never leaves a half-written result folder. summary.csv
holds no timings and rounded numbers, so the same recipe and seed reproduce it byte for byte.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .inference import versions
from .recipe import Recipe
from .registry import MCMC_METHODS

SUMMARY_MAX_ROWS = 25  # per fit in report.md; summary.csv has every row
Z_FLAG = 4.0  # |z| beyond this many MCSEs is more than Monte Carlo error
SD_TOLERANCE = 0.1  # reference comparisons: posterior sds should agree within 10%

SMOKE_BANNER = ("> **Smoke run**: tiny settings to check the pipeline; the numbers below are "
                "not to be interpreted.")


@dataclass
class FitResult:
    """One model × method of a run: the fit, or why there is none (e.g. Laplace not PD)."""

    model: str
    method: str
    fit: Any = None
    error: str | None = None
    time_s: float = 0.0
    comparison: pd.DataFrame | None = None  # vs the exact posterior or the reference draws
    comparison_kind: str | None = None  # "exact" or "reference"
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, file)
    notes: list[str] = field(default_factory=list)  # figures that failed, etc.
    model_figures: list[tuple[str, str]] = field(default_factory=list)  # all methods of the model

    @property
    def stem(self) -> str:
        return f"{self.model}__{self.method}"

    @property
    def converged(self) -> bool:
        """Every convergence check passed (PSIS-LOO reliability is reported separately)."""
        return self.fit is not None and self.fit.converged

    @property
    def problems(self) -> list[str]:
        """Everything a reader must not miss: failure, non-convergence, fit warnings."""
        if self.fit is None:
            return [f"failed: {self.error}"]
        out = [self.fit.info["fallback"]] if "fallback" in self.fit.info else []
        checks = self.fit.checks()
        failed = checks[~checks["passed"].astype(bool) & checks["kind"].ne("info")]
        # PSIS-LOO reliability is a different question from convergence: keep them apart.
        is_loo = failed["kind"].eq("loo") if "kind" in failed else pd.Series(False, index=failed.index)
        for rows, label in [(failed[~is_loo], "**did not converge**"),
                            (failed[is_loo], "PSIS-LOO unreliable")]:
            if len(rows):
                what = ", ".join(f"{r.check} = {_fmt(r.value)} (want {r.threshold})"
                                 for r in rows.itertuples())
                out.append(f"{label}: {what}")
        # The fit also lists each failed check as a warning; they are summarised above.
        out += [w for w in self.fit.warnings if not w.startswith("check failed:")] + self.notes
        return out


# -- atomic output --------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_directory(dest: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``dest``; on success it replaces ``dest`` in one rename.

    On any exception (KeyboardInterrupt included) the temp folder is deleted and ``dest`` is
    left as it was; a parent folder this call created is removed again if still empty. A
    SIGKILL leaves its temp folder behind: the next write of the same ``dest`` removes it.
    """
    dest = Path(dest)
    created = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(dest)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dest) + f"{_HOST}-{os.getpid()}-",
                                dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result folder should not be
    try:
        yield tmp
        _replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in created:  # innermost first
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


_HOST = socket.gethostname().replace("-", "_")  # "-" separates the name's fields


def _tmp_prefix(dest: Path) -> str:
    return f".{dest.name}.tmp-"


def _remove_orphans(dest: Path) -> None:
    """Delete temp folders of ``dest`` whose writer, a process on this host, is gone (killed
    mid-write). Another host's folders are left alone: its pids mean nothing here."""
    prefix = _tmp_prefix(dest)
    for tmp in dest.parent.glob(glob.escape(prefix) + "*"):
        host, _, rest = tmp.name[len(prefix):].partition("-")
        pid = rest.partition("-")[0]
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate it there: keep the folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def _replace(tmp: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rename(dest, old / "x")  # rename into a fresh unique name, then swap
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old / "x", dest)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


# -- tables ---------------------------------------------------------------------------------
def _fmt(x: Any, digits: int = 4) -> str:
    """Numbers to ``digits`` significant figures; everything else as text."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "nan"
        return f"{float(x):.{digits}g}"
    return str(x)


def _csv_value(col: str, x: Any) -> str:
    if isinstance(x, (float, np.floating)) and not math.isnan(x):
        if col.startswith("ess"):
            return f"{x:.0f}"
        if col == "r_hat":
            return f"{x:.3f}"
    return _fmt(x)


def summary_table(results: Sequence[FitResult]) -> pd.DataFrame:
    """Every fit's ``summary()`` stacked, as rounded strings (the byte-stable summary.csv)."""
    frames = []
    for r in results:
        if r.fit is None:
            continue
        s = r.fit.summary(round_to="none")  # we round: significant figures, not decimals
        s = s.reset_index(names="param")
        s.insert(0, "method", r.method)
        s.insert(0, "model", r.model)
        frames.append(s)
    if not frames:
        return pd.DataFrame(columns=["model", "method", "param"])
    table = pd.concat(frames, ignore_index=True)
    for col in table.columns[3:]:
        table[col] = [_csv_value(col, x) for x in table[col]]
    return table


def md_table(df: pd.DataFrame, index: str | None = None) -> str:
    """A GitHub-markdown table (pandas' to_markdown needs tabulate, which we do not ship);
    ``index`` names the index column to show, if any."""
    if index:
        df = df.reset_index(names=index)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    cols = [str(c) for c in df.columns]
    rows = ["| " + " | ".join(_csv_value(c, v) for c, v in zip(cols, row)) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _checks_md(fit) -> str:
    checks = fit.checks().copy()
    checks["passed"] = ["pass" if p else "above (info only)" if k == "info" else "**FAIL**"
                        for p, k in zip(checks["passed"].astype(bool), checks["kind"])]
    return md_table(checks)


def _comparison_md(r: FitResult) -> str:
    df = r.comparison.copy()
    if "z" in df:
        df["within 4 MCSE"] = ["yes" if abs(z) <= Z_FLAG else "**no**" for z in df["z"]]
    if "sd_ratio" in df:  # posteriordb's criterion: posterior sds agree within 10%
        df["sd within 10%"] = ["yes" if abs(r - 1) <= SD_TOLERANCE else "**no**" for r in df["sd_ratio"]]
    return md_table(df)


# -- report.md ------------------------------------------------------------------------------
def _exact_evidence_md(log_evidence: Mapping[str, float]) -> str:
    """Exact log evidence per model, its gap to the best, and P(model | y) under equal priors."""
    names = list(log_evidence)
    values = np.array([log_evidence[n] for n in names], dtype=float)
    weights = np.exp(values - values.max())
    table = pd.DataFrame({"model": names, "log p(y)": values, "difference to best": values - values.max(),
                          "P(model | y)": weights / weights.sum()})
    return md_table(table)


EVIDENCE_NOTE = (
    "The evidence and LOO answer different questions. The evidence p(y | M) is the *prior* "
    "predictive density of the data: it rewards a model whose prior put its mass where the data "
    "are, so it penalises vague priors and extra parameters (the Occam factor). PSIS-LOO "
    "estimates the *posterior* predictive density of each held-out observation, where the prior "
    "matters only through the posterior. They can disagree, and each is right about its question."
)


def evidence_table(rows: Sequence) -> pd.DataFrame:
    """evidence.csv: one row per model × estimator, rounded so a rerun gives the same bytes."""
    def num(x: float | None, spec: str) -> str:
        return "" if x is None else format(x, spec)

    return pd.DataFrame({
        "model": [r.model for r in rows],
        "estimator": [r.estimator for r in rows],
        "fit": [r.fit for r in rows],
        "log_evidence": [num(r.evidence and r.evidence.value, ".4f") for r in rows],
        "mcse": [num(r.evidence and r.evidence.mcse, ".2g") for r in rows],
        "note": ["; ".join(r.evidence.warnings) if r.evidence else f"n/a: {r.error}" for r in rows],
    })


def _diagnostics_text(ev) -> str:
    keys = [("pareto_k", "k̂"), ("ess", "ESS"), ("ess_posterior", "ESS"), ("iterations", "iterations"),
            ("max_rhat_unconstrained", "R-hat"), ("elbo", "ELBO"), ("proposal", "proposal")]
    return ", ".join(f"{label} {_fmt(ev.diagnostics[k], 3)}" for k, label in keys if k in ev.diagnostics)


def _evidence_md(rows: Sequence, recipe: Recipe, results: Sequence[FitResult]) -> list[str]:
    """The log-evidence table, the Bayes-factor comparison and the LOO comparison."""
    from .compare import PREFERENCE, best_estimates, compare
    from .errors import ZooError

    lines = ["", "## Model comparison", "", "Log evidence log p(y) by each estimator "
             "(value ± MCSE; *n/a* says why an estimator could not run):", "",
             "| model | estimator | log p(y) | MCSE | diagnostics | warnings |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r.evidence is None:
            lines.append(f"| {r.model} | {r.name} | n/a: {r.error} | | | |")
            continue
        ev = r.evidence
        warn = "; ".join(f"**{w}**" for w in ev.warnings)
        lines.append(f"| {r.model} | {r.name} | {ev.value:.4f} | {ev.mcse:.2g} | {_diagnostics_text(ev)} | {warn} |")
    best = best_estimates(rows)
    order = ", ".join(f"{e} ({f})" if f else e for e, f in PREFERENCE)
    prior = recipe.evidence["prior"]
    if best:
        labels = list(best)
        if prior is not None:  # models with no estimate drop out; renormalise over the rest
            total = sum(prior[label] for label in labels)
            prior = {label: prior[label] / total for label in labels}
        table = compare({label: row.evidence for label, row in best.items()}, prior=prior)
        table.insert(3, "from fit", [best[label].fit for label in table.index])
        lines += ["", f"Bayes factors, from the most accurate estimate per model (first available "
                  f"of: {order}; one with warnings only if nothing else is); prior over models: "
                  f"{'as stated in the recipe' if prior else 'uniform'}. `evidence_against` is "
                  "Kass & Raftery's (1995) wording for BF(best : model).", "",
                  md_table(table.drop(columns="warnings"), index="model")]
        warned = table[table["warnings"] != ""]
        lines += [f"- **{label}**: {w}" for label, w in warned["warnings"].items()]
    by_model: dict[str, Any] = {}
    for r in results:
        if r.fit is not None and (r.model not in by_model or r.method in MCMC_METHODS):
            by_model[r.model] = r.fit
    if len(by_model) > 1:
        methods = sorted({f.method for f in by_model.values()})
        try:
            loo = compare(by_model, by="loo").drop(columns="scale", errors="ignore")
            lines += ["", f"PSIS-LOO (ArviZ `az.compare`, stacking weights; {', '.join(methods)} "
                      "fits):", "", md_table(loo, index="model")]
        except (ZooError, ValueError, TypeError, KeyError) as e:
            lines += ["", f"PSIS-LOO comparison could not be computed: {e}"]
    lines += ["", EVIDENCE_NOTE]
    return lines


def render(
    recipe: Recipe,
    results: Sequence[FitResult],
    command: str,
    wall_s: float,
    log_evidence: Mapping[str, float] | None = None,
    evidence: Sequence | None = None,
    bf_figure: str | None = None,
) -> str:
    lines = [f"# {recipe.name}", ""]
    if recipe.smoke:
        lines += [SMOKE_BANNER, ""]
    lines += [recipe.description, "", f"- command: `{command}`", f"- seed: {recipe.seed}",
              f"- fitting time: {wall_s:.1f} s (the fits' own times, summed; writing files and "
              "figures not included)",
              f"- data: `{recipe.dataset}`"
              + (f" with {recipe.data_args}" if recipe.data_args else "")]
    if recipe.reference:
        lines.append(f"- reference: posteriordb `{recipe.reference['posteriordb']}`")
    lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items())
                 + f"; torch threads: {torch.get_num_threads()}")

    lines += ["", "## Warnings", ""]
    problems = [(r, p) for r in results for p in r.problems]
    if problems:
        lines += [f"- {r.model} / {r.method}: {p}" for r, p in problems]
    else:
        lines.append("None: every fit passed every check and raised no warning.")

    lines += ["", "## Overview", "", "| model | method | converged | warnings | time (s) |",
              "|---|---|---|---|---|"]
    for r in results:
        if r.fit is None:
            status = "**FAILED**"
        else:
            status = "yes" if r.converged else "**NO**"
        lines.append(f"| {r.model} | {r.method} | {status} | {len(r.problems)} | {r.time_s:.1f} |")

    if evidence is not None:
        lines += _evidence_md(evidence, recipe, results)
        if bf_figure:
            lines += ["", f"![log Bayes factors against the best model](figures/{bf_figure})"]
    elif log_evidence and len(log_evidence) > 1:
        lines += ["", "## Model comparison", "", "Exact log evidence (closed form; equal prior "
                  "probability for each model):", "", _exact_evidence_md(log_evidence)]

    lines += ["", "## Settings", ""]
    for method in recipe.methods:
        values = ", ".join(f"{k}={v!r}" for k, v in recipe.resolved[method].items())
        lines.append(f"- **{method}**: {values}")
    lines.append(f"- common: seed={recipe.seed}, dtype={recipe.dtype or 'float64'}")
    if any(m.args for m in recipe.models):
        lines += [f"- model `{m.label}` (`{m.name}`) arguments: {m.args}" for m in recipe.models if m.args]

    for model in dict.fromkeys(r.model for r in results):
        lines += ["", f"## {model}", ""]
        mine = [r for r in results if r.model == model]
        for r in mine:
            lines += [f"### {model} / {r.method}", ""]
            if r.fit is None:
                lines += [f"**Failed**: {r.error}", ""]
                continue
            lines += ["Checks:", "", _checks_md(r.fit), ""]
            summary = r.fit.summary(round_to="none")
            shown = summary.head(SUMMARY_MAX_ROWS)
            lines += ["Posterior summary" + (f" (first {SUMMARY_MAX_ROWS} of {len(summary)} rows; all in "
                      "summary.csv)" if len(summary) > SUMMARY_MAX_ROWS else "") + ":", "",
                      md_table(shown, index="param"), ""]
            if r.comparison is not None:
                what = "the exact posterior" if r.comparison_kind == "exact" else "the reference draws"
                lines += [f"Against {what} (z = difference in means / MCSE):", "", _comparison_md(r), ""]
            lines += [f"![{caption}](figures/{name})" for caption, name in r.figures]
            lines.append("")
        shared = [f for r in mine for f in r.model_figures]
        lines += [f"![{caption}](figures/{name})" for caption, name in shared]
    lines += ["", "Files: `summary.csv` (every parameter of every fit), `<model>__<method>.nc` "
              "(ArviZ InferenceData), " + ("`evidence.csv` (log evidence by model and estimator), "
                                           if evidence is not None else "") + "`figures/`.", ""]
    return "\n".join(lines)


# -- writing --------------------------------------------------------------------------------
def _draw(r: FitResult, caption: str, fn, *args, **kwargs) -> str | None:
    """Draw one figure; a figure that fails is reported in the warnings, not fatal to the run
    (losing a long run's fits to a plotting problem would be worse)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - reported prominently, see FitResult.problems
        r.notes.append(f"figure '{caption}' could not be drawn: {type(e).__name__}: {e}".splitlines()[0])
        return None


def write_figures(
    results: Sequence[FitResult], folder: Path, exact: Mapping[str, Any], reference, seed: int
) -> None:
    from . import figures

    folder.mkdir(exist_ok=True)
    for r in results:
        if r.fit is None:
            continue
        for caption, fn, kw in [
            ("sampling diagnostics", figures.sampling_figure, {}),
            ("divergences", figures.divergence_figure, {}),
            ("ELBO", figures.elbo_figure, {}),
            ("posterior predictive check", figures.ppc_figure, {"seed": seed}),
        ]:
            name = _draw(r, caption, fn, r.fit, folder, r.stem, **kw)
            if name:
                r.figures.append((caption, name))
    for model in dict.fromkeys(r.model for r in results):
        ok = [r for r in results if r.model == model and r.fit is not None]
        truth = ("exact posterior" if exact.get(model) is not None
                 else "reference draws" if reference is not None else None)
        if not ok or truth is None:
            continue
        name = _draw(ok[-1], "posterior vs truth", figures.density_figure, model, [r.fit for r in ok], folder,
                     model, exact=exact.get(model), reference=reference)
        if name:
            ok[-1].model_figures.append((f"{model}: every method vs the {truth}", name))


def _bayes_factor_figure(rows: Sequence, folder: Path, results: Sequence[FitResult]) -> str | None:
    from . import figures
    from .compare import best_estimates

    best = best_estimates(rows)
    if not best:
        return None
    top = max(best, key=lambda label: best[label].evidence.value)
    try:
        return figures.bayes_factor_figure(rows, top, folder)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not lose the run's fits
        if results:
            results[0].notes.append(f"figure 'Bayes factors' could not be drawn: {type(e).__name__}: {e}"
                                    .splitlines()[0])
        return None


def write_results(
    recipe: Recipe,
    results: Sequence[FitResult],
    dest: Path,
    command: str,
    wall_s: float,
    exact: Mapping[str, Any] | None = None,
    reference: Mapping[str, np.ndarray] | None = None,
    log_evidence: Mapping[str, float] | None = None,
    evidence: Sequence | None = None,
) -> Path:
    """Write the whole result folder atomically; returns ``dest``."""
    with atomic_directory(dest) as tmp:
        summary_table(results).to_csv(tmp / "summary.csv", index=False, lineterminator="\n")
        for r in results:
            if r.fit is not None:
                r.fit.to_inference_data().to_netcdf(str(tmp / f"{r.stem}.nc"))
        write_figures(results, tmp / "figures", exact or {}, reference, recipe.seed)
        bf_figure = None
        if evidence is not None:
            evidence_table(evidence).to_csv(tmp / "evidence.csv", index=False, lineterminator="\n")
            bf_figure = _bayes_factor_figure(evidence, tmp / "figures", results)
        (tmp / "report.md").write_text(render(recipe, results, command, wall_s, log_evidence,
                                              evidence, bf_figure))
    return Path(dest)
