"""SBC results on disk: the per model × method folder, figures, the CLI and the catalogue report.

    python -m zoo.run sbc --model normal_normal --method chees   # results/sbc/normal_normal-chees/
    python -m zoo.run sbc_catalogue                              # every model × method, resumable

A folder holds ``report.md`` (verdict, per-parameter tests, failed and unconverged fits,
settings, versions), ``ranks.csv`` (simulation × parameter; empty where the fit failed),
``simulations.csv`` (what each fit did), ``tests.csv`` and two figures: rank histograms with the
99% band of a bin count under uniformity (Talts et al. 2018, fig. 4) and ECDF differences
F̂(z) − z with the simultaneous band (Säilynoja, Bürkner & Vehtari 2022).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from .errors import ZooError  # noqa: E402
from .report import _fmt, atomic_directory, md_table  # noqa: E402
from .sbc import NUM_SIMULATIONS, sbc  # noqa: E402
from .sbc_result import TESTS, SBCResult, chi2_bins, ecdf_band  # noqa: E402

MAX_PANELS = 12  # parameters per figure, the least uniform first
DPI = 80
REFERENCES = (
    "Talts, Betancourt, Simpson, Vehtari & Gelman (2018), Validating Bayesian inference "
    "algorithms with simulation-based calibration, arXiv:1804.06788",
    "Säilynoja, Bürkner & Vehtari (2022), Graphical test for discrete uniformity and its "
    "applications in goodness-of-fit evaluation and multiple sample comparison, Statistics and "
    "Computing 32:32",
    "Modrák, Moon, Kim, Bürkner, Huurre, Faltejsková, Gelman & Vehtari (2023), Simulation-based "
    "calibration checking for Bayesian computation: the choice of test quantities shapes "
    "sensitivity, Bayesian Analysis, doi:10.1214/23-BA1404",
)


# -- saving and loading a result ------------------------------------------------------------
def save(result: SBCResult, folder: Path) -> None:
    """ranks.csv, simulations.csv and result.json: everything ``load`` needs."""
    ranks = result.ranks.astype("Int64")
    ranks.insert(0, "simulation", result.simulations["simulation"].to_numpy())
    ranks.to_csv(folder / "ranks.csv", index=False)
    result.simulations.to_csv(folder / "simulations.csv", index=False, float_format="%.6g")
    meta = {k: getattr(result, k) for k in ("model", "method", "num_draws", "seed", "settings",
                                             "dataset", "dataset_args", "args", "alpha", "notes",
                                             "info")}
    (folder / "result.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")


def load(folder: Path) -> SBCResult:
    meta = json.loads((folder / "result.json").read_text())
    ranks = pd.read_csv(folder / "ranks.csv").drop(columns="simulation").astype(float)
    sims = pd.read_csv(folder / "simulations.csv", keep_default_na=False,
                       na_values={"converged": [""], "min_ess": [""]})
    sims["converged"] = sims["converged"].map({True: True, False: False, "True": True,
                                               "False": False})
    return SBCResult(ranks=ranks, simulations=sims, **meta)


# -- figures --------------------------------------------------------------------------------
def _worst(result: SBCResult) -> list[str]:
    return list(result.tests.sort_values("min_p")["param"][:MAX_PANELS])


def _grid(n: int):
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def rank_figure(result: SBCResult, folder: Path) -> str | None:
    """Histograms of the ranks in the χ² test's bins, with the central 99% interval of a
    bin's count under uniform ranks (grey)."""
    params = _worst(result)
    if not params:
        return None
    fig, axes = _grid(len(params))
    for ax, param in zip(axes, params):
        r = result.ranks[param].dropna().to_numpy()
        edges = chi2_bins(len(r), result.num_draws)
        counts = np.histogram(r, bins=edges)[0]
        p = np.diff(edges) / (result.num_draws + 1)
        lo, hi = stats.binom.ppf(0.005, len(r), p), stats.binom.ppf(0.995, len(r), p)
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="C0", alpha=0.7)
        ax.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post",
                        color="0.5", alpha=0.3, lw=0)
        ax.set_title(param, fontsize=9)
        ax.set_xlim(0, result.num_draws + 1)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{result.model} / {result.method}: ranks of the truth among {result.num_draws} "
                 f"draws (grey: 99% of uniform)", fontsize=10)
    fig.tight_layout()
    return _save(fig, folder, "ranks.png")


def ecdf_figure(result: SBCResult, folder: Path) -> str | None:
    """F̂(z) − z for each parameter inside the simultaneous band at the per-test level."""
    params = _worst(result)
    if not params:
        return None
    fig, axes = _grid(len(params))
    for ax, param in zip(axes, params):
        r = result.ranks[param].dropna().to_numpy()
        if len(r) < 2:
            continue
        z, lower, upper = ecdf_band(len(r), result.num_draws, result.level)
        thresholds = np.round(z * (result.num_draws + 1))
        ecdf = (r[None, :] < thresholds[:, None]).mean(1)
        ax.fill_between(z, lower - z, upper - z, step="mid", color="0.5", alpha=0.3, lw=0)
        ax.step(z, ecdf - z, where="mid", color="C3", lw=1.2)
        ax.axhline(0, color="0.3", lw=0.6)
        ax.set_title(param, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{result.model} / {result.method}: ECDF difference, simultaneous "
                 f"{1 - result.level:.4g} band", fontsize=10)
    fig.tight_layout()
    return _save(fig, folder, "ecdf.png")


def _save(fig, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


# -- the folder of one model × method -------------------------------------------------------
def _fits_md(result: SBCResult) -> list[str]:
    sims = result.simulations
    ran = result.num_simulations - result.num_failed - result.num_skipped
    out = [f"- {result.num_simulations} simulations: {ran} fits ranked, "
           f"{'**' if result.num_failed else ''}{result.num_failed} failed"
           f"{'**' if result.num_failed else ''} (no rank; listed below), "
           f"{result.num_not_converged} ran but failed a convergence check (ranks kept: dropping "
           "them would bias SBC)."]
    errors = sims.loc[sims["status"] != "ok", "error"].value_counts()
    out += [f"  - failed {n}×: `{e}`" for e, n in errors.items()]
    checks = pd.Series([c for cs in sims["failed_checks"].astype(str) for c in cs.split("; ") if c])
    out += [f"  - not converged {n}×: {c}" for c, n in checks.value_counts().items()]
    ess = pd.to_numeric(sims["min_ess"], errors="coerce").dropna()
    if len(ess):
        below = int((ess < result.num_draws).sum())
        out.append(f"- NUTS min bulk ESS per fit: median {ess.median():.0f}; {below} of "
                   f"{len(ess)} fits below L = {result.num_draws} (their thinned draws are "
                   "autocorrelated, which makes ranks look too narrow).")
    cpu = sims.loc[~sims["status"].isin(["skipped", "budget"]), "cpu_s"].astype(float)
    status = sims["status"].value_counts()
    if status.get("skipped", 0):
        out.append(f"- **{status['skipped']} simulations skipped**: more than 10% of the fits "
                   "had failed, which settles the verdict.")
    if status.get("budget", 0):
        out.append(f"- **{status['budget']} simulations not run**: the CPU budget of the run "
                   "was spent; the tests use the ranks of the fits before it.")
    out.append(f"- CPU time per fit: median {cpu.median():.2f} s; the whole run "
               f"{result.info.get('cpu_s', cpu.sum()):.0f} CPU-s "
               f"({result.info.get('time_s', 0):.0f} s wall).")
    return out + [f"- note: {n}" for n in result.notes]


def report_md(result: SBCResult, command: str, figures: Sequence[str]) -> str:
    P = len(result.tested)  # parameters and the log-likelihood
    tests = result.tests.copy()
    table = tests[["param", "n", "chi2_p", "ecdf_p", "band", "mean_z", "dispersion_z", "min_p",
                   "reading"]]
    kind = ("an approximate method: a miscalibrated posterior is expected and labelled so"
            if result.approximate else "an exact method: non-uniform ranks FAIL it")
    lines = [
        f"# SBC: {result.model} / {result.method}", "",
        f"**Verdict: {result.verdict}** ({kind}). Smallest p-value over the {len(TESTS)} tests × "
        f"{P} ranked quantities, Bonferroni-adjusted: {_fmt(result.min_adjusted_p)} (the "
        f"verdict fails below alpha = {result.alpha}).", "",
        f"Written by `{command}`.", "",
        "## Uniformity of the ranks", "",
        f"Each test runs at level alpha / (4 × {P}) = {result.level:.3g}. `mean_z` > 0: the truth "
        "sits above the draws (posterior biased low); `dispersion_z` > 0: ranks pile up at both "
        "ends (posterior too narrow), < 0: too wide. `band`: is the ECDF inside the simultaneous "
        "band?", "",
        md_table(table), "",
        "## Fits", "", *_fits_md(result), "",
        "## Figures", "",
        *[f"![{f}]({f})" for f in figures], "",
        "## Settings", "",
        f"- model `{result.model}` on data set `{result.dataset}` "
        f"{json.dumps(result.dataset_args) if result.dataset_args else '(defaults)'}"
        + (f", model arguments {json.dumps(result.args)}" if result.args else ""),
        f"- simulations N = {result.num_simulations}, draws per rank L = {result.num_draws} "
        f"(ranks 0..{result.num_draws}), seed {result.seed}, alpha {result.alpha}",
        f"- {result.method} settings: " + (", ".join(f"{k}={v!r}" for k, v in
                                                      result.settings.items()) or "(none)"),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in result.info.get("versions", {}).items()),
        "", "## How it works", "",
        "θ ~ prior, y ~ model(θ) on the data set's covariates, fit, then the rank of θ among L "
        "posterior draws; a calibrated method gives uniform ranks. Tests per parameter: χ² over "
        "bins, the simultaneous ECDF band (exact, via the binomial recursion), and z-tests of the "
        "rank mean (bias) and mean squared centred rank (width); see `zoo/sbc.py`.", "",
        "## References", "", *[f"- {r}" for r in REFERENCES], "",
    ]
    return "\n".join(lines)


def write_folder(result: SBCResult, folder: Path, command: str) -> None:
    """Everything for one model × method into ``folder`` (an existing, empty temp folder)."""
    save(result, folder)
    result.tests.to_csv(folder / "tests.csv", index=False, float_format="%.6g")
    figures = [f for f in (rank_figure(result, folder), ecdf_figure(result, folder)) if f]
    (folder / "report.md").write_text(report_md(result, command, figures))


# -- CLI ------------------------------------------------------------------------------------
# --set keys that are sbc()'s own arguments, not method settings
SPECIAL = ("num_draws", "alpha", "deterministic", "parameters", "dataset", "fit_timeout",
           "max_cpu")


def parse_sets(texts: Sequence[str]) -> tuple[dict, dict]:
    """--set values: (sbc keyword arguments, method settings). ``dataset_args.K=V`` and
    ``args.K=V`` set data set and model arguments."""
    from .recipe import parse_override

    kwargs: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for text in texts:
        path, value = parse_override(text)
        if len(path) == 2 and path[0] in ("dataset_args", "args"):
            kwargs.setdefault(path[0], {})[path[1]] = value
        elif len(path) == 1 and path[0] in SPECIAL:
            kwargs[path[0]] = value
        elif len(path) == 1 and path[0] in ("seed", "progress", "method", "model"):
            raise ZooError(f"--set {text}: {path[0]} is not a setting (use --{path[0]}"
                           f"{'' if path[0] != 'progress' else ' / --quiet'})")
        elif len(path) == 1:
            settings[path[0]] = value  # validated by the method's settings schema
        else:
            raise ZooError(f"--set {text}: expected a method setting (num_warmup=200), one of "
                           f"{', '.join(SPECIAL)}, dataset_args.KEY or args.KEY")
    return kwargs, settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zoo.run sbc",
                                description="Simulation-based calibration of one model × method.")
    p.add_argument("--model", required=True, help="a registered model (see --list)")
    p.add_argument("--method", required=True,
                   help="chees, nuts, svi, laplace (those the model supports), or exact")
    p.add_argument("--simulations", type=int, default=NUM_SIMULATIONS, help="N (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results"),
                   help="writes OUT/sbc/<model>-<method>/ (default results/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting (num_warmup=300), num_draws=L, alpha=, dataset=NAME, "
                        "parameters=false (rank only the log-likelihood), "
                        "dataset_args.KEY=V or args.KEY=V (model hyperparameters); repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    kwargs, settings = parse_sets(args.set)
    from tqdm.auto import tqdm

    from .run import torch_threads

    bar = tqdm(total=args.simulations, desc=f"sbc {args.model}/{args.method}", unit="fit",
               disable=args.quiet or not sys.stderr.isatty(), file=sys.stderr)
    with bar, torch_threads(1):  # small models: one thread is fastest (see zoo.run)
        result = sbc(args.model, args.method, args.simulations, args.seed,
                     progress=lambda _: bar.update(), **kwargs, **settings)
    dest = args.out / "sbc" / f"{result.model}-{result.method}"
    with atomic_directory(dest) as tmp:
        write_folder(result, tmp, "python -m zoo.run sbc " + shlex.join(argv))
    print(f"{result.model} / {result.method}: {result.verdict} "
          f"({result.num_failed} failed, {result.num_not_converged} not converged)")
    print(f"wrote {dest}/report.md, ranks.csv, figures")
    return 0


# -- the catalogue recipe (cells and report: zoo.sbc_catalogue) ---------------------------
def _written_by_a_recipe(folder: Path) -> bool:
    """A cell folder an earlier recipe run wrote (e.g. the seed-1 rerun of a FAIL that now
    passes): stale once this run does not make it. `python -m zoo.run sbc` folders are kept."""
    report = folder / "report.md"
    text = report.read_text() if report.is_file() else ""
    written_by = "Written by `python -m zoo.run "
    return written_by in text and written_by + "sbc " not in text


def run_recipe(path: Path, raw: Mapping, args: argparse.Namespace, command: str) -> int:
    """The CLI for a recipe with an [sbc] table; ZooError propagates (exit 2)."""
    from .executors import ExecutorOptions, validate
    from .recipe import apply_overrides, display_path
    from .run import torch_threads
    from .cells import run_cells
    from .sbc_catalogue import (catalogue_md, confirmation, final_verdicts, make_cells,
                                run_cell)

    apply_overrides(raw, args.set)
    rec = raw.get("recipe", {})
    name, seed = rec.get("name"), rec.get("seed", 0) if args.seed is None else args.seed
    if name != path.stem:
        raise ZooError(f"{display_path(path)}: recipe: name {name!r} must equal the file's stem "
                       f"{path.stem!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ZooError(f"{display_path(path)}: recipe: seed must be an integer >= 0, got {seed!r}")
    out_name = name + ("-smoke" if args.smoke else "")
    cells, settings = make_cells(path, raw, args.smoke, seed, Path(args.out) / ".cells" / out_name)
    if args.check:
        print(f"sbc recipe {out_name}: {len(cells)} cells (model × method), seed {seed}")
        for c in cells:
            extra = {k: dict(getattr(c, k)) for k in ("dataset_args", "args") if getattr(c, k)}
            print(f"  {c.name}: N={c.num_simulations} L={c.num_draws} "
                  f"max_cpu={c.max_cpu:g}s "
                  f"{dict(c.settings) or ''} {extra or ''}".rstrip())
        print("ok: recipe is valid")
        return 0
    # A fresh worker every few cells: the fits' torch.jit graphs and caches otherwise pile up
    # (two workers reached 11 and 13 GB over ~130 cells).
    options = ExecutorOptions(name=args.executor or "local", workers=args.workers,
                              threads=args.threads, address=args.address, fail_fast=args.fail_fast,
                              max_tasks_per_child=4)
    validate(options)
    with torch_threads(options.threads or 1):
        run_cells(run_cell, cells, options, out_name, not args.quiet and sys.stdout.isatty(),
                  args.rerun)  # a failed cell: CellsFailed, reported by zoo.run
    results = [(c.folder, load(c.path)) for c in cells]
    # An exact method's FAIL is a bug, or one of the ~alpha x cells false alarms a table
    # expects: each is run again on fresh simulations and stays FAIL only if that fails too.
    failed = [c for c, (_, r) in zip(cells, results)
              if not r.approximate and r.verdict.startswith("FAIL")]
    if failed:
        again = [confirmation(c) for c in failed]
        with torch_threads(options.threads or 1):
            run_cells(run_cell, again, options, out_name, not args.quiet and sys.stdout.isatty(),
                      args.rerun)
        results += [(f"{c.folder}-seed{c.seed}", load(c.path)) for c in again]
    folder = str(raw["sbc"].get("folder", "sbc")) + ("-smoke" if args.smoke else "")
    dest = Path(args.out) / folder
    with atomic_directory(dest) as tmp:
        if dest.is_dir():  # keep folders of the sbc command; a recipe's own old ones go
            for old in dest.iterdir():
                if (old.is_dir() and old.name not in {f for f, _ in results}
                        and not _written_by_a_recipe(old)):
                    shutil.copytree(old, tmp / old.name)
        for folder, result in results:
            (tmp / folder).mkdir()
            write_folder(result, tmp / folder, command)
        rows = [(f, r, float(r.info.get("cpu_s", 0.0))) for f, r in results]
        (tmp / "report.md").write_text(catalogue_md(rows, command, {"seed": seed, **settings}))
    verdicts = pd.Series([v.split(" (")[0] for v in final_verdicts(rows) if v]).value_counts()
    print(f"{len(results)} cells: " + ", ".join(f"{n} {v}" for v, n in verdicts.items()))
    print(f"wrote {dest}/report.md and {len(results)} folders")
    return 0
