"""The report of a recipe with a ``[grid]``: one row per cell, assembled from the stored cells.

``cells.csv`` lists every cell (its grid values, model, method, convergence, time, key);
``summary.csv`` stacks every fit's posterior summary with the cell's grid values in front, so a
grid over splits or seeds can be aggregated with one ``groupby``; ``report.md`` shows both
(the summary as the mean and spread over the grid of each parameter's posterior mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .cells import Cell
from .grid import Point
from .inference import versions
from .report import FitResult, atomic_directory, md_table, summary_table


def cells_table(cells: Sequence[Cell], results: Sequence[FitResult]) -> pd.DataFrame:
    rows = []
    for cell, r in zip(cells, results):
        rows.append({**dict(cell.point), "model": r.model, "method": r.method,
                     "converged": "yes" if r.converged else ("no result" if r.fit is None else "**no**"),
                     "warnings": len(r.problems), "time (s)": round(r.time_s, 2), "key": cell.key})
    return pd.DataFrame(rows)


def grid_summary(cells: Sequence[Cell], results: Sequence[FitResult]) -> pd.DataFrame:
    frames = []
    for cell, r in zip(cells, results):
        table = summary_table([r])
        for i, (axis, value) in enumerate(cell.point):
            table.insert(i, axis, value)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def write_grid_results(points: Sequence[Point], cells: Sequence[Cell],
                       results: Sequence[FitResult], dest: Path, command: str,
                       fitting_s: float) -> Path:
    recipe = points[0].recipe
    table, summary = cells_table(cells, results), grid_summary(cells, results)
    axes = [axis for axis, _ in points[0].values]
    means = summary.assign(mean=pd.to_numeric(summary["mean"], errors="coerce"))
    spread = (means.groupby(["model", "method", "param"], sort=False)["mean"]
              .agg(["mean", "std", "min", "max"]).reset_index()
              .rename(columns={"mean": "mean of means", "std": "sd over grid"}))
    problems = [f"- {c.name}: {p}" for c, r in zip(cells, results) for p in r.problems]
    lines = [f"# {recipe.name}", "", recipe.description, "",
             f"- command: `{command}`",
             f"- grid: {len(points)} points over {', '.join(axes)}; "
             f"{len(cells)} cells (points x models x methods)",
             f"- fitting time: {fitting_s:.1f} s (the cells' own times, summed)",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
             "## Warnings", "", *(problems or ["none"]), "",
             "## Cells", "", md_table(table), "",
             "## Posterior means over the grid", "",
             "Each parameter's posterior mean in every cell, summarised over the grid points "
             f"({', '.join(axes)}); `summary.csv` has every cell's full summary.", "",
             md_table(spread), ""]
    with atomic_directory(dest) as tmp:
        table.to_csv(tmp / "cells.csv", index=False, lineterminator="\n")
        summary.to_csv(tmp / "summary.csv", index=False, lineterminator="\n")
        (tmp / "report.md").write_text("\n".join(lines))
    return Path(dest)
