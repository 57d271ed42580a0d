"""Cells: one fit each (grid point × model × method), stored on disk as it finishes.

A cell's key is a hash of everything that decides its numbers: the recipe's name, data set and
arguments, the model and its arguments, the method and every resolved setting, the seed, dtype,
device, and the zoo's own source code. A finished cell lives in ``<store>/<key>/`` (written in
a temporary folder, then renamed, so a kill at any moment leaves either the whole cell or none
of it); a re-run skips it, ``--rerun`` recomputes it. A failed cell keeps its traceback in
``error.txt`` and is tried again on the next run.

``run_cell`` is what executors run: a module-level function of a small picklable ``Cell``
that re-reads the recipe itself, so worker processes and Ray nodes need nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .errors import ConvergenceWarning, NotPositiveDefiniteError
from .executors import ExecutorOptions, run_tasks
from .grid import Point
from .recipe import Recipe, load_data, load_recipe
from .report import FitResult, atomic_directory

DONE = ("done", "no result")  # "no result": the method cannot apply (a saddle for Laplace)
_CODE_VERSION: str | None = None


def code_version(parts: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> str:
    """A hash of the zoo package's source (or of ``parts`` of it, or of all but ``exclude``:
    files or folders relative to the package): changed code invalidates the cells it computed."""
    if parts or exclude or _CODE_VERSION is None:
        root = Path(__file__).resolve().parent
        files = ([f for p in parts for f in ((root / p).rglob("*.py") if (root / p).is_dir()
                                              else [root / p])] if parts else root.rglob("*.py"))
        skip = [root / p for p in exclude]
        h = hashlib.sha256()
        for path in sorted(files):
            if not any(path == s or s in path.parents for s in skip):
                h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
        if parts or exclude:
            return h.hexdigest()[:12]
        globals()["_CODE_VERSION"] = h.hexdigest()[:12]
    return _CODE_VERSION


class StoredCell:
    """A unit of work stored in its own folder, ``store/key`` (key: a hash of its settings and
    code); done once the folder holds ``marker``. Subclasses are frozen dataclasses."""

    key: str
    store: str
    marker = "result.json"

    @property
    def path(self) -> Path:
        return Path(self.store) / self.key

    @property
    def done(self) -> bool:
        return (self.path / self.marker).is_file()


@dataclass(frozen=True)
class Cell(StoredCell):
    """Everything a worker needs to run one fit and store it."""

    recipe: str  # the recipe file
    overrides: tuple[str, ...]  # --set values, then the grid point's
    smoke: bool
    seed: int | None  # --seed
    point: tuple[tuple[str, Any], ...]
    model: int  # index into the recipe's [[models]]
    label: str
    method: str
    device: str
    key: str
    store: str  # the folder that holds every cell of this recipe

    @property
    def name(self) -> str:
        point = ", ".join(f"{k}={v}" for k, v in self.point)
        return f"{self.label} / {self.method}" + (f" [{point}]" if point else "")

    def status(self) -> str | None:
        try:
            return json.loads((self.path / "cell.json").read_text())["status"]
        except (OSError, ValueError, KeyError):
            return None

    @property
    def done(self) -> bool:
        return self.status() in DONE


class CellsFailed(Exception):
    """Some cells raised; the others are stored and the report is not written."""

    def __init__(self, failed: list):
        super().__init__(f"{len(failed)} cells failed")
        self.failed = failed  # (cell, exception) pairs


def run_cells(fn: Callable, cells: Sequence, options: ExecutorOptions, desc: str,
              progress: bool = False, rerun: bool = False) -> None:
    """Run ``fn`` on every cell not yet stored (every cell with ``rerun``) with the executor,
    a progress bar over all cells, and a tally on stderr; raise ``CellsFailed`` if any failed."""
    from tqdm.auto import tqdm

    todo = list(cells) if rerun else [c for c in cells if not c.done]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=desc, unit="cell",
               disable=not progress, file=sys.stderr)
    with bar:
        outcomes = run_tasks(fn, todo, options, progress=lambda cell, _: bar.update())
    failed = [(c, o) for c, o in zip(todo, outcomes) if isinstance(o, BaseException)]
    print(f"cells: {len(cells)} in all, {len(cells) - len(todo)} already stored, "
          f"{len(todo) - len(failed)} run now, {len(failed)} failed", file=sys.stderr)
    if failed:
        raise CellsFailed(failed)


def identity(recipe: Recipe, model: int, method: str, device: str) -> dict[str, Any]:
    """What a cell's numbers depend on, as plain JSON."""
    entry = recipe.models[model]
    return {"recipe": recipe.name, "dataset": recipe.dataset, "data_args": recipe.data_args,
            "model": entry.name, "args": entry.args, "label": entry.label, "method": method,
            "settings": recipe.resolved[method], "seed": recipe.seed, "dtype": recipe.dtype,
            "device": device, "code": code_version()}


def make_cells(points: Sequence[Point], store: Path, device: str = "cpu") -> list[Cell]:
    """Every point × model × method, in recipe order."""
    cells = []
    for point in points:
        r = point.recipe
        for i, entry in enumerate(r.models):
            for method in r.methods:
                ident = json.dumps(identity(r, i, method, device), sort_keys=True, default=str)
                key = hashlib.sha256(ident.encode()).hexdigest()[:16]
                cells.append(Cell(str(r.path), tuple(r.overrides), r.smoke, None if _grid_seed(point)
                                  else r.seed, point.values, i, entry.label, method, device, key,
                                  str(store)))
    return cells


def _grid_seed(point: Point) -> bool:
    return any(axis == "seed" or axis == "recipe.seed" for axis, _ in point.values)


def fit_one(recipe: Recipe, model: int, method: str, data: dict, device: str = "cpu",
            progress: bool = False) -> FitResult:
    """One model × method; a Hessian that is not positive definite is a result, not a crash
    (Laplace is simply not usable there, and the report says so)."""
    from . import inference

    entry = recipe.models[model]
    kwargs = recipe.fit_kwargs(method)
    if device != "cpu":
        kwargs["device"] = device
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # zoo.fit also records every ConvergenceWarning in fit.warnings; the report and the
            # end-of-run summary show them, so the Python copies would only be printed twice.
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = inference.fit(entry.name, {**data, **entry.args}, method=method,
                                progress=progress, **kwargs)
            result = FitResult(entry.label, method, fit=fit)
    except NotPositiveDefiniteError as e:
        result = FitResult(entry.label, method, error=str(e))
    result.time_s = time.perf_counter() - start
    return result


def run_cell(cell: Cell) -> dict[str, Any]:
    """Fit one cell and store it atomically; returns a small summary. An exception is stored
    (traceback in ``error.txt``) and raised again for the executor to collect."""
    from .inference import versions

    recipe = load_recipe(cell.recipe, overrides=cell.overrides, smoke=cell.smoke, seed=cell.seed)
    meta = {**identity(recipe, cell.model, cell.method, cell.device), "key": cell.key,
            "point": dict(cell.point), "versions": versions()}
    try:
        result = fit_one(recipe, cell.model, cell.method, load_data(recipe), cell.device)
    except BaseException as e:
        if isinstance(e, Exception):
            _store(cell, {**meta, "status": "failed", "error": f"{type(e).__name__}: {e}"},
                   traceback.format_exc())
        raise
    status = "done" if result.fit is not None else "no result"
    summary = {**meta, "status": status, "time_s": result.time_s, "error": result.error,
               "converged": bool(result.fit.converged) if result.fit is not None else None,
               "warnings": result.fit.warnings if result.fit is not None else []}
    _store(cell, summary, fit=result.fit)
    return {"key": cell.key, "status": status, "time_s": result.time_s}


def _store(cell: Cell, meta: dict, error: str | None = None, fit=None) -> None:
    with atomic_directory(cell.path) as tmp:
        if fit is not None:
            torch.save(dataclasses.replace(fit, _cache={}), tmp / "fit.pt")
        if error is not None:
            (tmp / "error.txt").write_text(error)
        (tmp / "cell.json").write_text(json.dumps({**meta, "finished": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2, default=str) + "\n")


def load_result(cell: Cell) -> FitResult:
    """The stored FitResult of a finished cell."""
    meta = json.loads((cell.path / "cell.json").read_text())
    fit = None
    if meta["status"] == "done":
        fit = torch.load(cell.path / "fit.pt", weights_only=False)
    return FitResult(cell.label, cell.method, fit=fit, error=meta.get("error"),
                     time_s=float(meta.get("time_s") or 0.0))
