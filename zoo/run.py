"""``python -m zoo.run RECIPE``: validate a recipe, fit every model × method, write the report.

    python -m zoo.run --list                      models, data sets and recipes
    python -m zoo.run eight_schools --check       validate; print what would run
    python -m zoo.run eight_schools --smoke       tiny settings, written to results/<name>-smoke/
    python -m zoo.run eight_schools --set inference.num_samples=200 --seed 1

Bad input (a ``ZooError``) prints one line ``error: ...`` on stderr and exits with status 2;
any other exception propagates with its traceback (status 1). Either way nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import registry
from .cells import CellsFailed, load_result, make_cells, run_cell, run_cells
from .errors import ZooError
from .gradient import torch_threads  # also used from here by zoo.sbc_report and zoo.bdl
from .executors import ExecutorOptions, TaskFailed, validate
from .grid import Point, expand
from .grid_report import write_grid_results
from .recipe import (Recipe, check_data, display_path, find_recipe, list_recipes, read_toml,
                     tomllib)
from .report import FitResult, write_results


# ``python -m zoo.run sbc --model M --method X``: a command of its own, handed its arguments.
SUBCOMMANDS = {"sbc": "zoo.sbc", "teach": "zoo.teach"}
# A recipe holding one of these tables is not a model fit: the module's ``run(path, raw, args,
# command)`` runs it with the same flags (--check, --smoke, --set, --out, --quiet, ...).
RECIPE_TABLES = {"experiment": "zoo.bdl.experiments", "posteriordb": "zoo.posteriordb_check",
                 "sbc": "zoo.sbc", "teach": "zoo.teach"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo.run",
        description="Run a recipe of the zoo: fit models to a data set and write a report.",
    )
    p.add_argument("recipe", nargs="?", help="recipe name (recipes/NAME.toml) or path to a TOML file")
    p.add_argument("--list", action="store_true", help="list models, data sets and recipes")
    p.add_argument("--check", action="store_true", help="validate the recipe and print what would run")
    p.add_argument("--smoke", action="store_true", help="use the recipe's [smoke] settings")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. inference.num_samples=200 (TOML literal; "
                        "repeatable); with --smoke, [smoke] values win, so set smoke.* there")
    p.add_argument("--out", default="results", type=Path, help="results folder (default: results/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--seed", type=int, default=None, help="override [recipe].seed")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads per worker (default: the cores divided among the workers, "
                        "at least 1; the zoo's models are small, so one thread is usually fastest)")
    p.add_argument("--executor", choices=None, default=None, metavar="{local,serial,ray}",
                   help="how cells run: local (default; a process pool sized to the machine), "
                        "serial (in this process, for debugging) or ray (pip install 'zoo[ray]')")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: the cores)")
    p.add_argument("--address", default=None,
                   help="Ray cluster for --executor ray: auto or ray://host:port (default: start "
                        "Ray on this machine)")
    p.add_argument("--rerun", action="store_true", help="recompute cells already stored")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda[:N]: for the methods that gain from it (chees, svi)")
    return p


# -- --list ---------------------------------------------------------------------------------
def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]


def listing() -> str:
    models = [(n, s.family, ",".join(s.methods), s.summary_line)
              for n, s in ((n, registry.get_model(n)) for n in registry.list_models())]
    datasets = [(n, registry.get_dataset(n).summary_line) for n in registry.list_datasets()]
    recipes = []
    for name, path in list_recipes().items():
        try:
            desc = tomllib.loads(path.read_text()).get("recipe", {}).get("description", "")
        except (tomllib.TOMLDecodeError, AttributeError):
            desc = "(invalid recipe: run --check)"
        recipes.append((name, str(desc).strip().splitlines()[0] if str(desc).strip() else ""))
    out = [f"models ({len(models)}):"] + (_columns(models) if models else [])
    out += ["", f"datasets ({len(datasets)}):"] + (_columns(datasets) if datasets else [])
    out += ["", f"recipes ({len(recipes)}):"] + (_columns(recipes) if recipes else [])
    return "\n".join(out)


def describe(points: Sequence[Point]) -> str:
    """What ``--check`` prints: the grid, the runs and every resolved setting."""
    recipe = points[0].recipe
    lines = [
        f"recipe {recipe.name}: {recipe.description}",
        f"  file: {display_path(recipe.path)}" + ("  (smoke settings)" if recipe.smoke else ""),
        f"  seed: {recipe.seed}" + (f"  dtype: {recipe.dtype}" if recipe.dtype else ""),
        f"  data: {recipe.dataset} {recipe.data_args or ''}".rstrip(),
    ]
    if recipe.overrides:
        lines.append(f"  --set: {' '.join(recipe.overrides)}")
    lines.append(
        f"  runs ({len(recipe.models)} models x {len(recipe.methods)} methods = {len(recipe.runs)} fits):"
    )
    for m in recipe.models:
        args = f" {m.args}" if m.args else ""
        label = f" as {m.label!r}" if m.label != m.name else ""
        lines.append(f"    {m.name}{args}{label}: {', '.join(recipe.methods)}")
    for method in recipe.methods:
        values = ", ".join(f"{k}={v!r}" for k, v in recipe.resolved[method].items())
        lines.append(f"  {method}: {values}")
    if recipe.reference:
        lines.append(f"  reference: posteriordb {recipe.reference['posteriordb']}")
    if recipe.evidence:
        ev = recipe.evidence
        lines.append(f"  evidence: {', '.join(ev['estimators'])} (bridge proposal "
                     f"{ev['bridge_proposal']}; prior over models: {ev['prior'] or 'uniform'})")
    cells = sum(len(p.recipe.runs) for p in points)
    if points[0].values:
        sizes = {}
        for p in points:
            for axis, value in p.values:
                sizes.setdefault(axis, set()).add(str(value))
        axes = ", ".join(f"{a}: {len(v)} values" for a, v in sizes.items())
        lines.append(f"  grid: {len(points)} points ({axes}); the settings above are the first point's")
    lines.append(f"  cells: {cells} ({len(points)} points x {len(recipe.runs)} fits)")
    return "\n".join(lines)


# -- running --------------------------------------------------------------------------------
def load_reference(recipe: Recipe) -> Mapping[str, Any] | None:
    """posteriordb reference draws named by ``[reference]``, or None."""
    if not recipe.reference:
        return None
    from .datasets import posteriordb_reference

    root = recipe.reference["root"]
    if root is None and recipe.dataset == "posteriordb":  # the data's copy of posteriordb
        root = recipe.data_args.get("root")
    try:
        return posteriordb_reference(recipe.reference["posteriordb"], root=root)
    except ZooError as e:
        raise ZooError(f"{display_path(recipe.path)}: reference: {e}") from None


def _exact(fit) -> Mapping[str, Any] | None:
    """The model's exact marginal posteriors on the data it was fitted to, if it has them."""
    if fit is None or fit.spec.exact_posterior is None:
        return None
    return fit.spec.exact_posterior(**fit.data)


def _compare(result: FitResult, reference: Mapping[str, Any] | None) -> None:
    from . import diagnostics

    if result.fit is None:
        return
    if reference is not None:
        result.comparison = diagnostics.compare_reference(result.fit, reference)
        result.comparison_kind = "reference"
    elif result.fit.spec.exact_posterior is not None:
        result.comparison = diagnostics.compare_exact(result.fit)
        result.comparison_kind = "exact"


def execute(points: Sequence[Point], out: Path, command: str, options: ExecutorOptions,
            progress: bool = False, rerun: bool = False, device: str = "cpu",
            ) -> tuple[Path, list[tuple[str, FitResult]]]:
    """Run every cell not yet stored, then write ``out/<name>`` (``<name>-smoke``) atomically
    from the stored cells. Cells live in ``out/.cells/<name>/`` and survive a killed run."""
    recipe = points[0].recipe
    for point in points:  # fail before the first fit, not after an hour of them
        check_data(point.recipe)
    reference = load_reference(recipe)
    name = recipe.name + ("-smoke" if recipe.smoke else "")
    cells = make_cells(points, Path(out) / ".cells" / name, device)
    run_cells(run_cell, cells, options, recipe.name, progress, rerun)
    results = [load_result(c) for c in cells]
    for r in results:
        _compare(r, reference)
    fitting_s = sum(r.time_s for r in results)
    dest = Path(out) / name
    if progress:
        print(f"writing {dest}/ (netCDF, figures, report) ...", file=sys.stderr)
    named = [(c.name, r) for c, r in zip(cells, results)]
    if len(points) > 1:
        return write_grid_results(points, cells, results, dest, command, fitting_s), named
    exact, log_evidence = {}, {}
    for entry in recipe.models:
        first = next((r.fit for r in results if r.model == entry.label and r.fit is not None), None)
        exact[entry.label] = _exact(first)
        if first is not None and first.spec.exact_log_evidence is not None:
            log_evidence[entry.label] = float(first.spec.exact_log_evidence(**first.data))
    evidence = estimate_evidence(recipe, results) if recipe.evidence else None
    dest = write_results(recipe, results, dest, command, fitting_s, exact=exact,
                         reference=reference, log_evidence=log_evidence, evidence=evidence)
    return dest, named


def estimate_evidence(recipe: Recipe, results: Sequence[FitResult]) -> list:
    """Every estimator of ``[evidence]`` on the fits it applies to; one that cannot run (a
    ZooError: too few draws, a delta guide, no closed form) is an "n/a" row, not a crash."""
    from .compare import estimate_all

    rows = []
    for entry in recipe.models:
        fits = {r.method: (r.fit if r.fit is not None else r.error)
                for r in results if r.model == entry.label}
        rows += estimate_all(entry.label, fits, recipe.evidence["estimators"], seed=recipe.seed,
                             bridge_proposal=recipe.evidence["bridge_proposal"])
    return rows


def executor_options(args: argparse.Namespace, recipe: Recipe) -> ExecutorOptions:
    """--executor (else the recipe's [recipe] executor, else local) and its options."""
    options = ExecutorOptions(name=args.executor or recipe.executor or "local",
                              workers=args.workers, threads=args.threads, address=args.address,
                              fail_fast=args.fail_fast)
    validate(options)  # a bad flag fails before anything runs
    return options


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _report_errors(lambda: importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            print(listing())
            return 0
        if not args.recipe:
            raise ZooError("name a recipe (see --list) or pass --list")
        path = find_recipe(args.recipe)
        raw = read_toml(path)
        for table, module in RECIPE_TABLES.items():
            if table in raw:
                return importlib.import_module(module).run(path, raw, args,
                                                           "python -m zoo.run " + shlex.join(argv))
        points = expand(args.recipe, overrides=args.set, smoke=args.smoke, seed=args.seed)
        if args.check:
            for point in points:
                check_data(point.recipe)
            load_reference(points[0].recipe)
            print(describe(points))
            print("ok: recipe is valid")
            return 0
        options = executor_options(args, points[0].recipe)
        from .inference import resolve_device

        resolve_device(args.device)  # a CUDA request without CUDA fails before anything runs
        progress = not args.quiet and sys.stdout.isatty()
        command = "python -m zoo.run " + shlex.join(argv)
        with torch_threads(options.threads or 1):
            dest, results = execute(points, args.out, command, options, progress, args.rerun,
                                    args.device)
    except ZooError as e:
        return _error(e)
    except CellsFailed as e:
        for cell, error in e.failed:
            where = cell.path / "error.txt"  # model cells keep their traceback on disk
            print(f"failed: {cell.name}: {type(error).__name__}: {error} " +
                  (f"(traceback: {where})" if where.is_file() else
                   "\n" + getattr(error, "zoo_traceback", "")), file=sys.stderr)
        print("the other cells are stored; fix the cause and run the same command again "
              "(no report was written)", file=sys.stderr)
        return 1
    except TaskFailed as e:  # --fail-fast: the first failure stopped the run
        print(f"failed (--fail-fast): {type(e.exception).__name__}: {e.exception}\n{e.traceback}",
              file=sys.stderr)
        print("finished cells are stored; fix the cause and run the same command again",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished cells are stored; run the same command again to finish "
              "the rest (no report was written)", file=sys.stderr)
        return 130
    for name, r in results:
        for problem in r.problems:
            print(f"warning: {name}: {problem.replace('**', '')}", file=sys.stderr)
    files = ("cells.csv, summary.csv" if len(points) > 1 else
             f"summary.csv, {sum(r.fit is not None for _, r in results)} .nc files")
    print(f"wrote {dest}/report.md, {files}")
    return 0


def _error(e: ZooError) -> int:
    message = " ".join(str(e).split())  # one line, whatever the message held
    print(f"error: {message}", file=sys.stderr)
    return 2


def _report_errors(command) -> int:
    try:
        return command()
    except ZooError as e:
        return _error(e)


def _sigterm_as_ctrl_c(signum: int, frame: Any) -> None:
    # `kill PID` (a scheduler's timeout, systemd) must stop the pool workers and write nothing
    # half-done, exactly as Ctrl-C does; by default SIGTERM kills this process alone and leaves
    # its workers fitting on, orphaned.
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m zoo.run --list | head`: the reader left, not an error
        sys.stderr.close()
        sys.exit(0)
