"""Every shared posteriordb posterior, fitted through the registry at its defaults and checked
against its reference draws: the ``[posteriordb]`` recipe table (``python -m zoo.run
posteriordb``) and ``check(posterior)`` for one.

PASS needs all of (the criterion of ``../shared/data/README.md`` and posteriordb's own):

- every reference parameter is in the fit, its mean within ``Z_MAX`` = 4 combined Monte Carlo
  standard errors of the reference mean (ours and the reference's, so a false alarm has
  probability ~6e-5 per parameter), and its posterior sd within ``SD_TOLERANCE`` = 10%;
- the fit passes its own convergence checks (R-hat, bulk and tail ESS >= 400, no divergent
  transition): a fit that agrees by luck but says it has not converged is not a pass.

Each posterior is one resumable cell (``results/.cells/posteriordb``), keyed by the posterior,
method, seed, settings and the zoo's code.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .cells import StoredCell, code_version, run_cells
from .errors import ConvergenceWarning, ZooError, did_you_mean
from .report import atomic_directory, md_table

Z_MAX = 4.0
SD_TOLERANCE = 0.10
KEYS = ("posteriors", "method", "root", "folder", "settings")


def model_for(posterior: str) -> str:
    """The registered model that serves a posteriordb posterior (``ModelSpec.posteriordb``)."""
    from .registry import get_model, list_models

    served = {p: n for n in list_models() for p in get_model(n).posteriordb}
    if posterior not in served:
        raise ZooError(f"no registered model serves posteriordb posterior {posterior!r}"
                       f"{did_you_mean(posterior, served)}")
    return served[posterior]


def check(posterior: str, method: str = "mcmc", seed: int = 0, root: str | None = None,
          **settings: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """Fit ``posterior`` with its registered model and compare it to the reference draws.

    Returns the report's row (verdict, reason, worst |z| and sd ratio, checks, time, ESS,
    divergences) and the per-parameter comparison (``zoo.diagnostics.compare_reference``)."""
    from . import diagnostics, inference
    from .datasets import posteriordb_reference
    from .registry import load_dataset

    model = model_for(posterior)
    data = load_dataset("posteriordb", posterior=posterior, root=root)
    reference = posteriordb_reference(posterior, root=root)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the row reports them
        fit = inference.fit(model, data, method=method, seed=seed, **settings)
    wall = time.perf_counter() - start
    table = diagnostics.compare_reference(fit, reference)
    expected = sum(int(np.prod(v.shape[2:])) for v in reference.values())
    missing = sorted(set(reference) - set(fit.posterior))
    checks = diagnostics.checks(fit, loo=False)
    failed_checks = [f"{r.check} = {r.value:.4g} (want {r.threshold})"
                     for r in checks.itertuples() if r.kind == "convergence" and not r.passed]
    worst_z = table.loc[table["z"].abs().idxmax()] if len(table) else None
    worst_sd = table.loc[(table["sd_ratio"] - 1).abs().idxmax()] if len(table) else None
    reasons = []
    if missing or len(table) != expected:
        reasons.append(f"reference parameters not in the fit: {missing or 'some elements'}")
    if worst_z is not None and not abs(worst_z["z"]) < Z_MAX:
        reasons.append(f"mean of {worst_z['param']} off by {worst_z['z']:.2f} MCSE")
    if worst_sd is not None and not abs(worst_sd["sd_ratio"] - 1) < SD_TOLERANCE:
        reasons.append(f"sd of {worst_sd['param']} off by a ratio of {worst_sd['sd_ratio']:.3f}")
    reasons += [f"check failed: {c}" for c in failed_checks]
    summary = diagnostics.summary(fit)
    row = {
        "posterior": posterior,
        "model": model,
        "verdict": "FAIL" if reasons else "PASS",
        "reason": "; ".join(reasons),
        "parameters": expected,
        "worst_z": float(abs(worst_z["z"])) if worst_z is not None else float("nan"),
        "worst_z_param": worst_z["param"] if worst_z is not None else "",
        "worst_sd_ratio": float(worst_sd["sd_ratio"]) if worst_sd is not None else float("nan"),
        "worst_sd_param": worst_sd["param"] if worst_sd is not None else "",
        "checks_passed": not failed_checks,
        "time_s": wall,
        "min_ess_bulk": float(summary["ess_bulk"].min()),
        "min_ess_tail": float(summary["ess_tail"].min()),
        "divergences": int(np.asarray(fit.sample_stats.get("diverging", 0)).sum()),
        "method": fit.method,
        "chains": int(next(iter(fit.posterior.values())).shape[0]),
        "draws_per_chain": int(next(iter(fit.posterior.values())).shape[1]),
        "metric": fit.info.get("metric", ""),
        "log_density": fit.info.get("log_density", ""),
    }
    return row, table


# -- the [posteriordb] recipe table ---------------------------------------------------------

@dataclass(frozen=True)
class ReferenceCell(StoredCell):  # done once result.json is stored
    posterior: str
    method: str
    seed: int
    root: str | None
    settings: tuple
    key: str
    store: str

    @property
    def name(self) -> str:
        return self.posterior


def unserved(posterior: str, reason: str) -> dict[str, Any]:
    """The row of a posterior no registered model serves: a FAIL that says so."""
    nan = float("nan")
    return {"posterior": posterior, "model": "", "verdict": "FAIL", "reason": reason,
            "parameters": 0, "worst_z": nan, "worst_z_param": "", "worst_sd_ratio": nan,
            "worst_sd_param": "", "checks_passed": False, "time_s": 0.0, "min_ess_bulk": nan,
            "min_ess_tail": nan, "divergences": 0}


def run_cell(cell: ReferenceCell) -> dict:
    try:
        model_for(cell.posterior)
    except ZooError as e:  # a posterior not ported yet is a FAIL row, not a crash
        row, table = unserved(cell.posterior, str(e)), pd.DataFrame()
    else:
        row, table = check(cell.posterior, cell.method, cell.seed, cell.root,
                           **dict(cell.settings))
    with atomic_directory(cell.path) as tmp:
        table.to_csv(tmp / "comparison.csv", index=False)
        (tmp / "result.json").write_text(json.dumps(row, indent=2, default=str) + "\n")
    return {"key": cell.key, "verdict": row["verdict"]}


def posteriors(pattern: Any, root: str | None, where: str) -> list[str]:
    """The shared posteriors a glob (or list of names/globs) selects, sorted."""
    from .datasets import list_posteriors

    available = list_posteriors(root)
    if not available:
        raise ZooError(f"{where}: no posteriordb posteriors found (is ../shared/data present?)")
    patterns = [pattern] if isinstance(pattern, str) else pattern
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ZooError(f"{where}: posteriors must be a glob or a list of names, got {pattern!r}")
    chosen = []
    for p in patterns:
        match = [a for a in available if fnmatch.fnmatch(a, p)]
        if not match:
            raise ZooError(f"{where}: posteriors: {p!r} matches no posterior"
                           f"{did_you_mean(p, available)}")
        chosen += [m for m in match if m not in chosen]
    return sorted(chosen)


def make_cells(table: Mapping, seed: int, store: Path, where: str) -> list[ReferenceCell]:
    unknown_keys = sorted(set(table) - set(KEYS))
    if unknown_keys:
        raise ZooError(f"{where}: unknown key(s) {unknown_keys}; allowed: {', '.join(KEYS)}")
    method = table.get("method", "mcmc")
    if not isinstance(method, str):
        raise ZooError(f"{where}: method must be a string, got {method!r}")
    settings = table.get("settings", {})
    if not isinstance(settings, Mapping):
        raise ZooError(f"{where}: settings must be a table of zoo.fit settings, got {settings!r}")
    root = table.get("root")
    cells = []
    for posterior in posteriors(table.get("posteriors", "*"), root, where):
        ident = {"posterior": posterior, "method": method, "seed": seed, "root": root,
                 "settings": dict(settings), "code": code_version()}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        cells.append(ReferenceCell(posterior, method, seed, root, tuple(sorted(settings.items())),
                                   key, str(store)))
    return cells


COLUMNS = {"posterior": "posterior", "verdict": "verdict", "parameters": "params",
           "worst_z": "worst |z|", "worst_sd_ratio": "worst sd ratio",
           "checks_passed": "own checks", "time_s": "wall s", "min_ess_bulk": "min ESS bulk",
           "min_ess_tail": "min ESS tail", "divergences": "divergences", "reason": "reason"}


def report_md(rows: list[dict], command: str, settings: Mapping) -> str:
    df = pd.DataFrame(rows)
    passed = int((df["verdict"] == "PASS").sum())
    shown = df[list(COLUMNS)].rename(columns=COLUMNS)
    for col in ("worst |z|", "worst sd ratio"):
        shown[col] = shown[col].map(lambda x: f"{x:.2f}" if col == "worst |z|" else f"{x:.3f}")
    shown["wall s"] = shown["wall s"].map(lambda x: f"{x:.1f}")
    for col in ("min ESS bulk", "min ESS tail"):
        shown[col] = shown[col].map(lambda x: f"{x:.0f}")
    shown["own checks"] = shown["own checks"].map(lambda x: "pass" if x else "FAIL")
    lines = [
        "# posteriordb: the zoo's models against the reference posteriors",
        "",
        f"**{passed} of {len(df)} PASS** at the defaults of `zoo.fit(model, data, "
        f"method={settings['method']!r}, seed={settings['seed']})`"
        + (f" with {settings['settings']}" if settings["settings"] else "") + ".",
        "",
        f"PASS: every reference parameter's mean within {Z_MAX:g} combined MCSE (ours and the "
        f"reference's), its sd within {SD_TOLERANCE:.0%}, and the fit's own checks passed "
        "(R-hat, bulk and tail ESS >= 400, no divergences). References: Stan NUTS, 10 chains "
        "x 1000 thinned draws (posteriordb). Wall time: from the call to the returned Fit.",
        "",
        md_table(shown),
        "",
        f"Total wall time {df['time_s'].sum():.0f} s; median {df['time_s'].median():.1f} s.",
        "",
        "## Run",
        "",
        f"- command: `{command}`",
        f"- code: `{code_version()}`",
        "- per posterior: `comparison.csv` (every reference parameter: our mean and sd, the "
        "reference's, combined MCSE, z, sd ratio) and `result.json` in its folder",
    ]
    from .inference import versions

    lines += [f"- versions: {versions()}", ""]
    return "\n".join(lines)


def run(path: Path, raw: Mapping, args: argparse.Namespace, command: str) -> int:
    """A recipe with a ``[posteriordb]`` table; ZooError propagates (exit 2)."""
    from .executors import ExecutorOptions, validate
    from .gradient import torch_threads
    from .recipe import apply_overrides, display_path
    from .registry import get_model, list_models

    apply_overrides(raw, args.set)
    where = display_path(path)
    rec = raw.get("recipe", {})
    name, seed = rec.get("name"), rec.get("seed", 0) if args.seed is None else args.seed
    if name != path.stem:
        raise ZooError(f"{where}: recipe: name {name!r} must equal the file's stem {path.stem!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ZooError(f"{where}: recipe: seed must be an integer >= 0, got {seed!r}")
    table = dict(raw["posteriordb"])
    if args.smoke:
        table.update(raw.get("smoke", {}).get("posteriordb", {}))
    out_name = name + ("-smoke" if args.smoke else "")
    cells = make_cells(table, seed, Path(args.out) / ".cells" / out_name, f"{where}: posteriordb")
    if args.check:
        print(f"posteriordb recipe {out_name}: {len(cells)} posteriors, method "
              f"{table.get('method', 'mcmc')}, seed {seed}")
        served = {p: n for n in list_models() for p in get_model(n).posteriordb}
        for c in cells:
            print(f"  {c.posterior}: model {served.get(c.posterior, '(none: FAIL)')}")
        print("ok: recipe is valid")
        return 0
    options = ExecutorOptions(name=args.executor or "local", workers=args.workers,
                              threads=args.threads, address=args.address,
                              fail_fast=args.fail_fast, max_tasks_per_child=4)
    validate(options)
    with torch_threads(options.threads or 1):
        run_cells(run_cell, cells, options, out_name, not args.quiet and sys.stdout.isatty(),
                  args.rerun)
    rows = [json.loads((c.path / "result.json").read_text()) for c in cells]
    dest = Path(args.out) / (str(table.get("folder", "posteriordb")) + ("-smoke" if args.smoke
                                                                         else ""))
    settings = {"method": table.get("method", "mcmc"), "seed": seed,
                "settings": dict(table.get("settings", {}))}
    with atomic_directory(dest) as tmp:
        for c, row in zip(cells, rows):
            (tmp / c.posterior).mkdir()
            for f in ("comparison.csv", "result.json"):
                (tmp / c.posterior / f).write_bytes((c.path / f).read_bytes())
        pd.DataFrame(rows).to_csv(tmp / "summary.csv", index=False)
        (tmp / "report.md").write_text(report_md(rows, command, settings))
    passed = sum(r["verdict"] == "PASS" for r in rows)
    print(f"{passed} of {len(rows)} posteriors PASS")
    print(f"wrote {dest}/report.md")
    return 0
