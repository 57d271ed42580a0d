"""The ``[sbc]`` recipe table as resumable cells (one per model × method), and the catalogue
report that reads them (``python -m zoo.run sbc_catalogue``; the runner is
``zoo.sbc_report.run_recipe``).

Cells are keyed by their settings and by the code their ranks depend on (NOT_IN_RANKS lists
what they do not: reports, verdicts, other experiments), so a rerun computes only what changed.
An exact method's FAIL is run again on fresh simulations and stands only if that fails too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .cells import StoredCell, code_version
from .errors import ZooError, did_you_mean
from .report import _fmt, atomic_directory, md_table
from .sbc import FIT_TIMEOUT, NUM_DRAWS, NUM_SIMULATIONS, sbc
from .sbc_report import REFERENCES, save
from .sbc_result import ALPHA, APPROXIMATE, SBCResult


# -- the [sbc] recipe table: every model × method as a resumable cell -------------------------
METHODS = ("chees", "nuts", "svi", "laplace", "exact")
SBC_KEYS = ("models", "methods", "num_simulations", "num_draws", "alpha", "fit_timeout", "max_cpu",
            "folder", "model")
MODEL_KEYS = ("dataset", "dataset_args", "args", "methods", "parameters", "num_simulations",
              "fit_timeout", "max_cpu")


@dataclass(frozen=True)
class SBCCell(StoredCell):  # done once result.json is stored
    model: str
    method: str
    num_simulations: int
    num_draws: int
    alpha: float
    fit_timeout: float
    max_cpu: float
    seed: int
    dataset: str | None
    dataset_args: tuple
    args: tuple
    parameters: bool
    settings: tuple
    key: str
    store: str

    @property
    def name(self) -> str:
        return f"{self.model} / {self.method}"

    @property
    def folder(self) -> str:
        return f"{self.model}-{self.method}"


def run_cell(cell: SBCCell) -> dict:
    """One model × method's SBC, stored atomically in the cell's folder."""
    result = sbc(cell.model, cell.method, cell.num_simulations, cell.seed, cell.dataset,
                 dict(cell.dataset_args), cell.num_draws, dict(cell.args), cell.alpha,
                 parameters=cell.parameters, fit_timeout=cell.fit_timeout, max_cpu=cell.max_cpu,
                 **dict(cell.settings))
    with atomic_directory(cell.path) as tmp:
        save(result, tmp)
    return {"key": cell.key, "verdict": result.verdict}


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for k, v in extra.items():
        both = isinstance(v, Mapping) and isinstance(out.get(k), Mapping)
        out[k] = _merge(out[k], v) if both else v
    return out


def _check_keys(label: str, where: str, table: Mapping, allowed: Sequence[str]) -> None:
    for key in table:
        if key not in allowed:
            raise ZooError(f"{label}: {where}: unknown key {key!r}{did_you_mean(key, allowed)}; "
                           f"allowed: {', '.join(allowed)}")


def _models(label: str, pattern: Any) -> list[str]:
    from .registry import get_model, list_models

    names: list[str] = []
    for p in [pattern] if isinstance(pattern, str) else list(pattern):
        if not isinstance(p, str):
            raise ZooError(f"{label}: sbc.models: expected names or globs, got {p!r}")
        if any(c in p for c in "*?["):
            found = list_models(p)
            if not found:
                raise ZooError(f"{label}: sbc.models: {p!r} matches no registered model")
        else:
            found = [get_model(p).name]  # unknown name: did-you-mean
        names += [n for n in found if n not in names]
    return names


RUN_KEYS = ("num_simulations", "fit_timeout", "max_cpu")  # may also sit in a method table
# Code a cell's ranks cannot depend on (reports, other experiments), left out of its key so
# that editing it does not recompute hours of fits.
NOT_IN_RANKS = ("bdl", "bench", "teach", "sbc_report.py", "sbc_result.py", "sbc_catalogue.py",
                "grid_report.py", "report.py", "figures.py", "continual.py")


def _check_values(label: str, where: str, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        integer = key in ("num_simulations", "num_draws")
        typed = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
        if not typed or not (value >= 2 if integer else 0 < value < 1 if key == "alpha"
                             else value >= 0):
            raise ZooError(f"{label}: {where}.{key}: got {value!r}; want " + (
                "an integer >= 2" if integer else "a number in (0, 1)" if key == "alpha"
                else "CPU seconds >= 0 (0: no limit)"))


def _flag(label: str, where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ZooError(f"{label}: {where}: got {value!r}; want true or false")
    return value


def _cell(store: str, **fields: Any) -> SBCCell:
    """A cell keyed by a hash of its fields and of the code its ranks depend on."""
    ident = json.dumps([fields, code_version(exclude=NOT_IN_RANKS)], sort_keys=True, default=str)
    return SBCCell(**fields, key=hashlib.sha256(ident.encode()).hexdigest()[:16], store=store)


def confirmation(cell: SBCCell) -> SBCCell:
    """The same cell on fresh simulations (the next seed)."""
    fields = {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)
              if f.name not in ("key", "store")}
    return _cell(cell.store, **{**fields, "seed": cell.seed + 1})


def make_cells(path: Path, raw: Mapping, smoke: bool, seed: int, store: Path) -> tuple[list, dict]:
    """Validate the [sbc] table (with [smoke] merged in) and expand it to cells. Run keys
    (num_simulations, fit_timeout, max_cpu) go [sbc] < [sbc.METHOD] < [sbc.model.NAME] <
    [sbc.model.NAME.METHOD]; the rest of a method table is zoo.fit settings."""
    import inspect

    from .recipe import display_path
    from .registry import get_dataset, get_model
    from .sbc import method_settings, proper_prior

    label = display_path(path)
    _check_keys(label, "recipe", raw, ("recipe", "sbc", "smoke"))
    table = _merge(raw["sbc"], raw.get("smoke", {}) if smoke else {})
    _check_keys(label, "sbc", table, SBC_KEYS + METHODS)
    methods = table.get("methods", list(METHODS))
    for m in methods:
        if m not in METHODS:
            raise ZooError(f"{label}: sbc.methods: unknown method {m!r}"
                           f"{did_you_mean(str(m), METHODS)}; allowed: {', '.join(METHODS)}")
    common = {k: table.get(k, d) for k, d in (("num_simulations", NUM_SIMULATIONS),
                                              ("num_draws", NUM_DRAWS), ("alpha", ALPHA),
                                              ("fit_timeout", FIT_TIMEOUT), ("max_cpu", 0.0))}
    _check_values(label, "sbc", common)
    per_model = table.get("model", {})
    for name, entry in per_model.items():
        get_model(name)
        _check_keys(label, f"sbc.model.{name}", entry, MODEL_KEYS + METHODS)
        if "dataset" in entry or "dataset_args" in entry:
            dataset = entry.get("dataset") or get_model(name).default_dataset
            allowed = inspect.signature(get_dataset(dataset).loader).parameters
            _check_keys(label, f"sbc.model.{name}.dataset_args ({dataset})",
                        entry.get("dataset_args", {}), list(allowed))
    cells, flat = [], []
    for name in _models(label, table.get("models", "*")):
        spec, entry = get_model(name), per_model.get(name, {})
        if not proper_prior(spec):  # nothing to simulate from (Stan's flat priors)
            flat.append(name)
            continue
        for m in entry.get("methods", methods):
            if not (m in spec.methods or (m == "exact" and spec.exact_posterior is not None)):
                continue
            run, settings = dict(common), {}
            for where, layer in ((f"sbc.{m}", table.get(m, {})),
                                 (f"sbc.model.{name}", {k: v for k, v in entry.items()
                                                        if k in RUN_KEYS}),
                                 (f"sbc.model.{name}.{m}", entry.get(m, {}))):
                keys = {k: v for k, v in layer.items() if k in RUN_KEYS}
                _check_values(label, where, keys)
                run.update(keys)
                settings.update({k: v for k, v in layer.items() if k not in RUN_KEYS})
            try:
                settings = method_settings(spec, m, common["num_draws"], settings)
            except ZooError as e:
                raise ZooError(f"{label}: sbc.{m} (model {name}): {e}") from None
            cells.append(_cell(
                str(store), model=name, method=m, num_simulations=run["num_simulations"],
                num_draws=run["num_draws"], alpha=run["alpha"],
                fit_timeout=float(run["fit_timeout"]), max_cpu=float(run["max_cpu"]),
                seed=seed, dataset=entry.get("dataset"),
                dataset_args=tuple(sorted(entry.get("dataset_args", {}).items())),
                args=tuple(sorted(entry.get("args", {}).items())),
                parameters=_flag(label, f"sbc.model.{name}.parameters",
                                 entry.get("parameters", True)),
                settings=tuple(sorted(settings.items()))))
    flat_note = {"left out (flat, improper prior)": ", ".join(flat)} if flat else {}
    return cells, {**common, **{m: table[m] for m in METHODS if m in table}, **flat_note}


# -- the catalogue report -------------------------------------------------------------------
def final_verdicts(rows: Sequence[tuple]) -> list[str | None]:
    """Each cell's verdict, read with its confirmation run (rows named ``FOLDER-seedS``),
    whose own entry becomes None: FAIL stands only if the fresh simulations fail too."""
    by_name = {row[0]: row[1] for row in rows}
    out: list[str | None] = []
    for name, r, *_ in rows:
        again = by_name.get(f"{name}-seed{r.seed + 1}")
        if name.rsplit("-seed", 1)[0] in by_name and "-seed" in name:
            out.append(None)  # shown beside the cell it confirms
        elif again is None:
            out.append(r.verdict)
        elif again.verdict.startswith("FAIL"):
            out.append(f"FAIL (confirmed on fresh simulations, seed {again.seed}: "
                       f"{again.verdict})")
        else:
            first = again.verdict.split(" (")[0]
            out.append(f"{first} (seed {r.seed}: {r.verdict}; fresh simulations, seed "
                       f"{again.seed}: {again.verdict})")
    return out


def catalogue_md(rows: Sequence[tuple[str, SBCResult, float]], command: str,
                 settings: Mapping[str, Any]) -> str:
    """One table, model × method, linking each folder (and any confirmation run's)."""
    verdicts = final_verdicts(rows)
    rows = [(name, r, t, v) for (name, r, t), v in zip(rows, verdicts) if v is not None]
    table = pd.DataFrame([{
        "model": r.model, "method": r.method,
        "ranked / N": f"{r.num_simulations - r.num_failed - r.num_skipped} / {r.num_simulations}",
        "failed": r.num_failed,
        "not converged": r.num_not_converged, "params": r.ranks.shape[1],
        "min adj. p": _fmt(r.min_adjusted_p, 3),
        "ECDF band": ("**outside**" if (r.tests["band"] == "outside").any() else
                      "inside" if (r.tests["band"] == "inside").any() else "n/a"),
        "verdict": v if v.startswith("pass") else f"**{v}**",
        "CPU (s)": f"{t:.0f}", "folder": ", ".join(
            f"[{f}]({f}/report.md)" for f in (name, f"{name}-seed{r.seed + 1}")
            if f == name or v != r.verdict)}
        for name, r, t, v in rows])
    counts = pd.Series([v.split(" (")[0] for *_, v in rows]).value_counts()
    versions = rows[0][1].info.get("versions", {}) if rows else {}
    lines = [
        "# Simulation-based calibration of the catalogue", "",
        f"Written by `{command}`: every model × method it supports, {len(rows)} cells "
        f"({', '.join(f'{n} {v}' for v, n in counts.items())}); "
        f"{sum(t for _, _, t, _ in rows) / 60:.0f} CPU-minutes of fitting.", "",
        "Each cell draws θ from the prior and y from the model N times (the same N data sets for "
        "every method of a model), fits, and ranks θ among L posterior draws, and the "
        "log-likelihood log p(y | θ) at θ among its values at the draws (Modrák et al. 2023; "
        "not tested for `exact`, whose draws are independent marginals). The verdict is "
        f"**FAIL** for an exact method (chees, nuts, exact) whose ranks are not uniform at "
        f"family-wise level alpha = {settings.get('alpha', ALPHA)} per cell (4 tests × P "
        "quantities, Bonferroni), or when over 10% of its fits failed (it says how many of its "
        "fits failed their convergence checks when that is most of them); for "
        f"{' and '.join(APPROXIMATE)} it is **miscalibrated (approximate method)**: mean-field "
        "and Gaussian approximations are known to be too narrow or biased. `min adj. p` is the "
        "smallest Bonferroni-adjusted p-value; `ECDF band` whether every parameter's ECDF stays "
        "inside its simultaneous band (Säilynoja et al. 2022). The table expects up to "
        f"{len(rows) * settings.get('alpha', ALPHA):.1f} false FAILs at that level, so an exact "
        "method's FAIL is run again on fresh simulations (the next seed, linked beside it) and "
        "stays FAIL only if that run fails too. "
        "**inconclusive**: most failed fits ran over the CPU limit per fit, or fewer than 10 "
        "fits were ranked. `ranked / N` falls short of N where fits failed or a cell's CPU "
        "budget (`max_cpu`) ran out (the verdict then says so; the tests use the ranks so far). "
        "`not converged`: fits that ran but failed a convergence check (their ranks are kept).",
        "",
        md_table(table), "",
        "## Settings", "",
        *[f"- {k}: {v}" for k, v in settings.items()],
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "",
        "## References", "", *[f"- {r}" for r in REFERENCES], "",
    ]
    return "\n".join(lines)
