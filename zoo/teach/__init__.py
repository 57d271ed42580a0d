"""Teaching walk-throughs: reports a student reads top to bottom, every number computed.

    python -m zoo.run teach beta_binomial            # runs recipes/teach_beta_binomial.toml
    python -m zoo.run teach eight_schools --smoke --out /tmp/r
    python -m zoo.run teach_linear_regression --set teach.num_points=30

A recipe with a ``[teach]`` table names its walk-through and that walk-through's settings;
``[smoke]`` holds the values ``--smoke`` uses instead (a nested table, such as ``inference``,
is merged key by key). Each walk-through is one module here with ``TITLE``, ``INTRO``,
``DEFAULTS`` (the settings and their types: the schema), ``validate(settings, where)`` and
``build(doc, settings, seed)``; ``zoo.teach.document`` assembles and writes the report.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import shlex
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

from ..errors import ZooError, did_you_mean, unknown

WALKTHROUGHS = {
    "beta_binomial": "Bayes' theorem on a coin: grid, closed form, sequential updating, MCMC",
    "linear_regression": "Bayesian linear regression: prior lines, posterior lines as data "
                         "arrive, exact NIG posterior vs MCMC, predictive bands",
    "eight_schools": "Complete, no and partial pooling; shrinkage; the centred funnel's "
                     "divergences",
    "bnn_1d": "A Bayesian neural network on 1-D data with a gap: aleatoric vs epistemic "
              "uncertainty",
}
TABLES = ("recipe", "teach", "smoke")


def module(name: str) -> ModuleType:
    """The walk-through module ``zoo.teach.<name>``; an unknown name gets a did-you-mean."""
    if name not in WALKTHROUGHS:
        raise unknown("walk-through", name, WALKTHROUGHS)
    return importlib.import_module(f"{__name__}.{name}")


# -- settings ---------------------------------------------------------------------------------
def _typed(where: str, key: str, value: Any, default: Any) -> Any:
    """``value`` checked against the type of ``default`` (ints are accepted as floats)."""
    def bad(kind: str) -> ZooError:
        return ZooError(f"{where}.{key} must be {kind}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise bad("a list")
        if default:
            return [_typed(where, f"{key}[{i}]", v, default[0]) for i, v in enumerate(value)]
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad("a table")
        return dict(value)
    return value


def resolve_settings(walkthrough: ModuleType, teach: Mapping[str, Any], smoke: Mapping[str, Any]
                     | None, where: str) -> dict[str, Any]:
    """DEFAULTS, then the recipe's ``[teach]`` values, then ``[smoke]``'s (when given), each
    key checked by name (did-you-mean) and type; then the walk-through's own ``validate``."""
    defaults = walkthrough.DEFAULTS
    settings = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    for table, values in (("teach", teach), ("smoke", smoke or {})):
        for key, value in values.items():
            if table == "teach" and key == "walkthrough":
                continue
            if key not in defaults:
                raise ZooError(f"{where}: {table}: unknown setting {key!r}"
                               f"{did_you_mean(key, defaults)}; allowed: {', '.join(defaults)}")
            value = _typed(f"{where}: {table}", key, value, defaults[key])
            if isinstance(value, dict) and table == "smoke":
                settings[key].update(value)  # [smoke.inference] overrides key by key
            else:
                settings[key] = value
    walkthrough.validate(settings, where)
    return settings


def header(raw: Mapping[str, Any], path: Path, label: str) -> tuple[str, int, str]:
    """The recipe's name (= the file's stem), seed and walk-through, checked."""
    for table in raw:
        if table not in TABLES:
            raise ZooError(f"{label}: unknown table [{table}]{did_you_mean(table, TABLES)}; "
                           f"a teaching recipe has {', '.join(f'[{t}]' for t in TABLES)}")
    rec = raw.get("recipe", {})
    name, seed = rec.get("name"), rec.get("seed", 0)
    if name != path.stem:
        raise ZooError(f"{label}: recipe: name {name!r} must equal the file's stem {path.stem!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ZooError(f"{label}: recipe: seed must be an integer >= 0, got {seed!r}")
    teach = raw.get("teach")
    if not isinstance(teach, dict):
        raise ZooError(f"{label}: teach must be a table")
    walkthrough = teach.get("walkthrough")
    if not isinstance(walkthrough, str):
        raise ZooError(f"{label}: teach: walkthrough must name one of {', '.join(WALKTHROUGHS)}")
    if walkthrough not in WALKTHROUGHS:
        raise ZooError(f"{label}: teach: unknown walkthrough {walkthrough!r}"
                       f"{did_you_mean(walkthrough, WALKTHROUGHS)}; allowed: "
                       f"{', '.join(WALKTHROUGHS)}")
    return name, seed, walkthrough


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread (restored after): these models are tiny, and a fixed count keeps
    float reductions, hence the reports' numbers, the same from machine to machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# -- running ----------------------------------------------------------------------------------
def run(path: Path, raw: Mapping[str, Any], args: argparse.Namespace, command: str) -> int:
    """Run a ``[teach]`` recipe (``zoo.run`` hands it here); returns the exit status.
    ``ZooError`` propagates: the caller prints it on one line and exits with status 2."""
    from ..inference import versions
    from ..recipe import apply_overrides, display_path
    import torch

    from ..fit import default_dtype
    from .document import write_walkthrough

    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    label = display_path(path)
    overrides = list(getattr(args, "set", []) or [])
    apply_overrides(raw, overrides)  # --set teach.num_points=30: checked like the file
    name, seed, walkthrough = header(raw, path, label)
    seed = args.seed if getattr(args, "seed", None) is not None else seed
    smoke = bool(getattr(args, "smoke", False))
    wt = module(walkthrough)
    settings = resolve_settings(wt, raw["teach"], raw.get("smoke") if smoke else None, label)
    described = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    if getattr(args, "check", False):
        print(f"teach {name}: walk-through {walkthrough}{' (smoke settings)' if smoke else ''}, "
              f"seed {seed}\n  {described}\nok: recipe is valid")
        return 0
    dest = Path(getattr(args, "out", "results")) / (name + ("-smoke" if smoke else ""))
    if not getattr(args, "quiet", False):
        print(f"teach {walkthrough}: building {dest}/ ...", file=sys.stderr)
    start, cpu = time.perf_counter(), time.process_time()

    def provenance() -> list[str]:
        return [f"command: `{command}`",
                f"recipe: `{label}`" + (" with its `[smoke]` settings" if smoke else "")
                + (f"; --set {' '.join(overrides)}" if overrides else ""),
                f"seed: {seed} (the same seed gives the same numbers: see numbers.json)",
                f"settings: {described}",
                "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
                f"time: {time.perf_counter() - start:.1f} s wall, "
                f"{time.process_time() - cpu:.1f} s CPU (one torch thread)"]

    with _one_thread(), default_dtype(torch.float64):  # the zoo's models run in float64
        write_walkthrough(dest, wt.TITLE, wt.INTRO, lambda doc: wt.build(doc, settings, seed),
                          provenance)
    print(f"wrote {dest}/report.md, numbers.json, figures/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zoo.run teach",
        description="Build a teaching walk-through (recipes/teach_NAME.toml) into results/.",
        epilog="walk-throughs: " + "; ".join(f"{k}: {v}" for k, v in WALKTHROUGHS.items()))
    p.add_argument("name", nargs="?", help=f"one of: {', '.join(WALKTHROUGHS)}")
    p.add_argument("--list", action="store_true", help="list the walk-throughs")
    p.add_argument("--check", action="store_true", help="validate the recipe; print the settings")
    p.add_argument("--smoke", action="store_true",
                   help="the recipe's [smoke] settings (seconds), written to <name>-smoke/")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. teach.num_points=30 (repeatable)")
    p.add_argument("--out", default="results", type=Path, help="results folder (default: results/)")
    p.add_argument("--seed", type=int, default=None, help="override [recipe].seed")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zoo.run teach NAME [...]``: run ``recipes/teach_NAME.toml``."""
    from ..recipe import find_recipe, read_toml

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.list or not args.name:
        width = max(map(len, WALKTHROUGHS))
        print("\n".join(f"  {k.ljust(width)}  {v}" for k, v in WALKTHROUGHS.items()))
        return 0
    if args.name not in WALKTHROUGHS:
        raise unknown("walk-through", args.name, WALKTHROUGHS)
    path = find_recipe(f"teach_{args.name}")
    return run(path, read_toml(path), args, "python -m zoo.run teach " + shlex.join(argv))
