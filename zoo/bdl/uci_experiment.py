"""The UCI regression benchmark with the published protocol, as cells that resume.

Protocol (Hernández-Lobato & Adams 2015; Gal & Ghahramani 2016; Lakshminarayanan et al. 2017):
inputs and target standardised on the training split; one ReLU hidden layer of 50 units (100
for protein); hyperparameters chosen on a validation split (the last 20% of the training
indices) by validation log-likelihood; the chosen model retrained on the whole training split;
test RMSE and test log-likelihood per point in the target's original units; mean ± standard
error over the splits.

Every data set × split × method is one cell (``zoo.cells``' store and ``zoo.executors``), so a
killed run resumes and the report is assembled from the stored metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ZooError, did_you_mean
from ..report import atomic_directory, md_table

COVERAGE_LEVELS = (0.5, 0.9, 0.95)
# The code a cell's numbers depend on: its key hashes these, not the whole package.
# The source a cell's numbers depend on: editing any of it recomputes the cells, editing the
# CLI or the other experiments does not.
CODE = tuple(f"bdl/{m}.py" for m in ("net", "bbb", "dropout", "ensemble", "laplace", "uci_experiment")
             ) + ("models/networks.py", "datasets/uci.py", "uncertainty.py", "calibration.py")
PIT_BINS = 10


# -- the methods --------------------------------------------------------------------------
def _mc_dropout(data: Mapping, settings: Mapping, seed: int, validation: Mapping | None):
    from .dropout import dropout_grid_search, fit_mc_dropout

    rates, taus = data["dropout_rates"], data["tau_values"]
    chosen = {}
    if validation is not None and (len(rates) > 1 or len(taus) > 1):
        best, _ = dropout_grid_search(validation["x_train"], validation["y_train"],
                                      validation["x_test"], validation["y_test"], rates, taus,
                                      y_std=validation["y_std"], hidden=data["n_hidden"],
                                      epochs=settings.get("epochs", data["n_epochs"]), seed=seed,
                                      **_rest(settings))
        chosen = {"dropout": best[0], "tau": best[1]}
    else:
        chosen = {"dropout": rates[0], "tau": taus[0]}
    fit = fit_mc_dropout(data["x_train"], data["y_train"], hidden=data["n_hidden"],
                         epochs=settings.get("epochs", data["n_epochs"]), seed=seed,
                         y_std=data["y_std"], **chosen, **_rest(settings))
    return fit, chosen


def _bnn(data, settings, seed, validation):
    from .bbb import fit_bbb

    return fit_bbb(data["x_train"], data["y_train"], hidden=data["n_hidden"],
                   epochs=settings.get("epochs", data["n_epochs"]), seed=seed,
                   **_rest(settings)), {}


def _ensemble(data, settings, seed, validation):
    from .ensemble import fit_ensemble

    return fit_ensemble(data["x_train"], data["y_train"], hidden=data["n_hidden"],
                        epochs=settings.get("epochs", data["n_epochs"]), seed=seed,
                        **_rest(settings)), {}


def _laplace(structure: str, subset: str):
    def fit(data, settings, seed, validation):
        from .laplace import fit_laplace

        return fit_laplace(data["x_train"], data["y_train"], subset=subset, structure=structure,
                           hidden=data["n_hidden"], epochs=settings.get("epochs", data["n_epochs"]),
                           seed=seed, **_rest(settings)), {}
    return fit


def _rest(settings: Mapping) -> dict:
    return {k: v for k, v in settings.items() if k not in ("epochs", "num_samples")}


METHODS: dict[str, Callable] = {
    "mc_dropout_mlp": _mc_dropout,
    "bnn_mlp": _bnn,
    "deep_ensemble": _ensemble,
    "laplace_kron": _laplace("kron", "all"),
    "laplace_last_layer": _laplace("full", "last_layer"),
}
# The published column each of our methods is compared with (README of ../shared/data/uci).
PUBLISHED_COLUMN = {"mc_dropout_mlp": "MC dropout", "bnn_mlp": "VI", "deep_ensemble": "ensemble(5)"}


# -- cells ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UciCell:
    dataset: str
    split: int
    method: str
    settings: tuple[tuple[str, Any], ...]
    seed: int
    root: str | None
    key: str
    store: str

    @property
    def path(self) -> Path:
        return Path(self.store) / self.key

    @property
    def name(self) -> str:
        return f"{self.dataset} split {self.split} / {self.method}"

    @property
    def done(self) -> bool:
        return (self.path / "metrics.json").is_file()


def make_cells(datasets: Sequence[str], splits: Mapping[str, Sequence[int]], methods: Sequence[str],
               settings: Mapping[str, Mapping], seed: int, root: str | None, store: Path) -> list[UciCell]:
    from ..cells import code_version

    cells = []
    for d in datasets:
        for s in splits[d]:
            for m in methods:
                items = tuple(sorted(settings.get(m, {}).items()))
                ident = json.dumps([d, s, m, items, seed, code_version(CODE)], default=str)
                key = hashlib.sha256(ident.encode()).hexdigest()[:16]
                cells.append(UciCell(d, s, m, items, seed, root, key, str(store)))
    return cells


def run_cell(cell: UciCell) -> dict:
    """Select hyperparameters on the validation split, retrain on the training split, score
    the test split in original units; store ``metrics.json`` atomically."""
    from ..datasets.uci import load_uci

    start = time.perf_counter()
    settings = dict(cell.settings)
    data = load_uci(cell.dataset, cell.split, root=cell.root)
    validation = load_uci(cell.dataset, cell.split, root=cell.root, validation=True)
    torch.manual_seed(cell.seed)
    fit, chosen = METHODS[cell.method](data, settings, cell.seed + cell.split, validation)
    pred = fit.predict(data["x_test"], num_samples=settings.get("num_samples", 100))
    pred = pred.rescale(data["y_std"], data["y_mean"])  # original units
    y = data["y_test"] * data["y_std"] + data["y_mean"]
    from ..calibration import coverage, pit

    metrics = {"dataset": cell.dataset, "split": cell.split, "method": cell.method,
               "rmse": pred.rmse(y), "ll": float(pred.log_likelihood(y).mean()),
               "coverage": {str(k): v for k, v in coverage(pred, y, COVERAGE_LEVELS).items()},
               "pit": [float(v) for v in pit(pred, y)],
               "aleatoric": float(pred.aleatoric.mean()), "epistemic": float(pred.epistemic.mean()),
               "chosen": chosen, "settings": settings, "time_s": time.perf_counter() - start}
    with atomic_directory(cell.path) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    return {"key": cell.key, "time_s": metrics["time_s"]}


# -- the published numbers ------------------------------------------------------------------
def published(readme: Path) -> pd.DataFrame | None:
    """The published table of ../shared/data/README.md as (dataset, metric, column) -> (mean, se)."""
    if not readme.is_file():
        return None
    rows = []
    header = None
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| data set |"):
            header = cells
            continue
        if header and line.startswith("|") and "±" in line:
            for col, text in zip(header[1:], cells[1:]):
                m = re.match(r"([−-]?[\d.]+)±([\d.]+)", text)
                if m:
                    column, metric = col.rsplit(" ", 1)  # "MC dropout RMSE" -> ("MC dropout", "RMSE")
                    rows.append({"dataset": cells[0], "metric": metric, "column": column,
                                 "mean": float(m.group(1).replace("−", "-")), "se": float(m.group(2))})
    return pd.DataFrame(rows) if rows else None


# -- the report ----------------------------------------------------------------------------
def summarise(metrics: Sequence[dict]) -> pd.DataFrame:
    """Mean ± standard error over splits per data set and method."""
    df = pd.DataFrame(metrics)
    out = []
    for (d, m), g in df.groupby(["dataset", "method"], sort=False):
        n = len(g)
        row = {"dataset": d, "method": m, "splits": n}
        for key in ("rmse", "ll"):
            row[key] = g[key].mean()
            row[f"{key}_se"] = g[key].std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        for level in COVERAGE_LEVELS:
            row[f"{level:.0%} coverage"] = float(np.mean([c[str(level)] for c in g["coverage"]]))
        row["time_s"] = g["time_s"].sum()
        out.append(row)
    return pd.DataFrame(out)


def verdicts(table: pd.DataFrame, pub: pd.DataFrame | None) -> list[str]:
    """Sentences comparing our mean test LL with the published column of the same method."""
    lines = []
    if pub is None:
        return ["The published numbers were not found (../shared/data/README.md is absent)."]
    for r in table.itertuples():
        column = PUBLISHED_COLUMN.get(r.method)
        hit = pub[(pub.dataset == r.dataset) & (pub.metric == "LL") & (pub.column == column)]
        if column is None or hit.empty:
            continue
        p = hit.iloc[0]
        se = math.hypot(p["se"], r.ll_se if math.isfinite(r.ll_se) else 0.0)
        diff = r.ll - p["mean"]
        word = ("better than" if diff > 2 * se else "**worse than**" if diff < -2 * se
                else "within two standard errors of")
        lines.append(f"- {r.dataset}, {r.method}: test LL {r.ll:.3f} ± {r.ll_se:.3f} is {word} "
                     f"the published {column} {p['mean']:.2f} ± {p['se']:.2f}.")
    return lines


def write_report(cells: Sequence[UciCell], dest: Path, command: str, readme: Path) -> Path:
    from ..calibration import pit_figure
    from ..inference import versions

    metrics = [json.loads((c.path / "metrics.json").read_text()) for c in cells]
    table = summarise(metrics)
    pub = published(readme)
    lines = ["# uci_regression", "",
             __doc__.split("\n\n")[1].strip(), "",
             f"- command: `{command}`",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), ""]
    for dataset, g in table.groupby("dataset", sort=False):
        rows = [{"method": r["method"], "splits": r["splits"],
                 "test RMSE": f"{r['rmse']:.3g} ± {r['rmse_se']:.2g}",
                 "test LL": f"{r['ll']:.3f} ± {r['ll_se']:.3f}",
                 **{f"{lv:.0%} coverage": f"{r[f'{lv:.0%} coverage']:.2f}" for lv in COVERAGE_LEVELS}}
                for r in g.to_dict("records")]
        if pub is not None:
            for column in ("VI", "PBP", "MC dropout", "ensemble(5)"):
                got = {m: pub[(pub.dataset == dataset) & (pub.metric == m) & (pub.column == column)]
                       for m in ("RMSE", "LL")}
                if all(not v.empty for v in got.values()):
                    rows.append({"method": f"published {column}", "splits": "",
                                 "test RMSE": f"{got['RMSE'].iloc[0]['mean']:.3g} ± {got['RMSE'].iloc[0]['se']:.2g}",
                                 "test LL": f"{got['LL'].iloc[0]['mean']:.2f} ± {got['LL'].iloc[0]['se']:.2f}"})
        lines += [f"## {dataset}", "", md_table(pd.DataFrame(rows).fillna("")), ""]
    lines += ["## Against the published numbers", "", *verdicts(table, pub), ""]
    with atomic_directory(dest) as tmp:
        table.to_csv(tmp / "summary.csv", index=False, lineterminator="\n")
        pd.DataFrame([{k: v for k, v in m.items() if k not in ("pit", "coverage")} | 
                      {f"coverage_{k}": v for k, v in m["coverage"].items()} for m in metrics]
                     ).to_csv(tmp / "splits.csv", index=False, lineterminator="\n")
        (tmp / "figures").mkdir()
        pits = {f"{d} / {m}": np.concatenate([x["pit"] for x in metrics
                                             if x["dataset"] == d and x["method"] == m])
                for d, m in table[["dataset", "method"]].itertuples(index=False)}
        pit_figure(pits, tmp / "figures" / "pit.png")
        lines += ["## Calibration: PIT histograms (flat is calibrated)", "", "![PIT](figures/pit.png)", ""]
        (tmp / "report.md").write_text("\n".join(lines))
    return Path(dest)


# -- the recipe ----------------------------------------------------------------------------
EXPERIMENT_KEYS = ("kind", "datasets", "methods", "splits", "root")


def validate(raw: Mapping, label: str, smoke: bool) -> dict:
    """``[experiment]`` (+ ``[smoke]``) of a uci_regression recipe, strictly checked."""
    from ..datasets.uci import list_uci

    exp = dict(raw.get("experiment", {}))
    per_method = {m: dict(exp.pop(m)) for m in list(exp) if m in METHODS}
    if smoke:
        s = dict(raw.get("smoke", {}))
        for m in list(s):
            if m in METHODS:
                per_method.setdefault(m, {}).update(s.pop(m))
        exp.update(s)
    for key in exp:
        if key not in EXPERIMENT_KEYS:
            raise ZooError(f"{label}: experiment: unknown key {key!r}{did_you_mean(key, EXPERIMENT_KEYS)}; "
                           f"allowed: {', '.join(EXPERIMENT_KEYS)} and a table per method")
    root = exp.get("root")
    available = list_uci(root)
    datasets = exp.get("datasets", available)
    for d in datasets:
        if d not in available:
            raise ZooError(f"{label}: experiment.datasets: unknown data set {d!r}"
                           f"{did_you_mean(d, available)}; allowed: {', '.join(available)}")
    methods = exp.get("methods", list(METHODS))
    for m in methods:
        if m not in METHODS:
            raise ZooError(f"{label}: experiment.methods: unknown method {m!r}"
                           f"{did_you_mean(m, METHODS)}; allowed: {', '.join(METHODS)}")
    splits = exp.get("splits", "all")
    if not (splits == "all" or isinstance(splits, int) and splits >= 1):
        raise ZooError(f"{label}: experiment.splits must be \"all\" or a positive integer (the "
                       f"first K splits), got {splits!r}")
    return {"datasets": datasets, "methods": methods, "splits": splits, "root": root,
            "settings": per_method}
