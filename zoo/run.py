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
import contextlib
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from . import registry
from .errors import ConvergenceWarning, NotPositiveDefiniteError, ZooError
from .recipe import (  # tomllib: with the Python 3.10 fallback
    Recipe, check_data, display_path, list_recipes, load_data, load_recipe, tomllib,
)
from .report import FitResult, write_results


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
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the zoo's models are small, so more threads "
                        "mostly add synchronisation, and results then do not depend on the core count)")
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


def describe(recipe: Recipe) -> str:
    """What ``--check`` prints: the runs and every resolved setting."""
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


def fit_one(model: str, method: str, data: Mapping[str, Any], recipe: Recipe, progress: bool,
            label: str | None = None) -> FitResult:
    """One model × method; a Hessian that is not positive definite is a result, not a crash
    (Laplace is simply not usable there, and the report says so)."""
    from . import inference

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # zoo.fit also records every ConvergenceWarning in fit.warnings; the report and the
            # end-of-run summary show them, so the Python copies would only be printed twice.
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = inference.fit(model, data, method=method, progress=progress,
                                **recipe.fit_kwargs(method))
            result = FitResult(label or model, method, fit=fit)
    except NotPositiveDefiniteError as e:
        result = FitResult(label or model, method, error=str(e))
    result.time_s = time.perf_counter() - start
    return result


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


def execute(recipe: Recipe, out: Path, command: str, progress: bool = False) -> tuple[Path, list[FitResult]]:
    """Fit everything, then write ``out/<name>`` (``<name>-smoke`` for smoke runs) atomically."""
    from tqdm.auto import tqdm

    data = load_data(recipe)
    check_data(recipe, data)  # fail before the first fit, not after an hour of them
    reference = load_reference(recipe)
    start = time.perf_counter()
    results: list[FitResult] = []
    bar = tqdm(total=len(recipe.runs), desc=recipe.name, unit="fit", disable=not progress, file=sys.stderr)
    with bar:
        for entry in recipe.models:
            for method in recipe.methods:
                bar.set_postfix_str(f"{entry.label} / {method}")
                result = fit_one(entry.name, method, {**data, **entry.args}, recipe, progress,
                                 label=entry.label)
                _compare(result, reference)
                results.append(result)
                bar.update()
    wall_s = time.perf_counter() - start
    exact, log_evidence = {}, {}
    for entry in recipe.models:
        first = next((r.fit for r in results if r.model == entry.label and r.fit is not None), None)
        exact[entry.label] = _exact(first)
        if first is not None and first.spec.exact_log_evidence is not None:
            log_evidence[entry.label] = float(first.spec.exact_log_evidence(**first.data))
    evidence = estimate_evidence(recipe, results) if recipe.evidence else None
    name = recipe.name + ("-smoke" if recipe.smoke else "")
    if progress:
        print(f"writing {Path(out) / name}/ (netCDF, figures, report) ...", file=sys.stderr)
    dest = write_results(recipe, results, Path(out) / name, command, wall_s, exact=exact,
                         reference=reference, log_evidence=log_evidence, evidence=evidence)
    return dest, results


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


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads, restoring the caller's count (main() runs in-process
    in tests). Measured: SVI on polynomial_d3 runs 2.3x faster on one thread than on two, and a
    fixed count keeps float reductions, hence summary.csv, independent of the machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.list:
            print(listing())
            return 0
        if not args.recipe:
            raise ZooError("name a recipe (see --list) or pass --list")
        recipe = load_recipe(args.recipe, overrides=args.set, smoke=args.smoke, seed=args.seed)
        if args.check:
            check_data(recipe)
            load_reference(recipe)
            print(describe(recipe))
            print("ok: recipe is valid")
            return 0
        if args.threads < 1:
            raise ZooError(f"--threads must be >= 1, got {args.threads}")
        progress = not args.quiet and sys.stdout.isatty()
        command = "python -m zoo.run " + shlex.join(argv)
        with torch_threads(args.threads):
            dest, results = execute(recipe, args.out, command, progress)
    except ZooError as e:
        message = " ".join(str(e).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        return 2
    for r in results:
        for problem in r.problems:
            print(f"warning: {r.model} / {r.method}: {problem.replace('**', '')}", file=sys.stderr)
    print(f"wrote {dest}/report.md, summary.csv, {sum(r.fit is not None for r in results)} .nc files")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m zoo.run --list | head`: the reader left, not an error
        sys.stderr.close()
        sys.exit(0)
