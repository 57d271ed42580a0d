"""Recipes whose ``[experiment]`` table runs a network benchmark instead of model fits.

    [experiment]
    kind = "uci_regression"            # or "calibration_classification", "active_learning",
                                       # "continual_learning"

``python -m zoo.run NAME`` hands such a recipe here; ``--check``, ``--smoke``, ``--set``,
``--out``, ``--executor``, ``--rerun`` and the rest mean what they mean for other recipes.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ZooError, did_you_mean
from ..recipe import display_path

KINDS = ("uci_regression", "calibration_classification", "active_learning", "continual_learning")
CALIBRATION_KEYS = ("kind", "methods", "n_train", "n_val", "n_test")
TOP_TABLES = ("recipe", "experiment", "smoke")


def header(raw: Mapping, path: Path) -> tuple[str, str, int, str]:
    label = display_path(path)
    rec = raw.get("recipe", {})
    name, description, seed = rec.get("name"), rec.get("description", ""), rec.get("seed", 0)
    if name != path.stem:
        raise ZooError(f"{label}: recipe: name {name!r} must equal the file's stem {path.stem!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ZooError(f"{label}: recipe: seed must be an integer >= 0, got {seed!r}")
    kind = raw["experiment"].get("kind")
    if kind not in KINDS:
        raise ZooError(f"{label}: experiment: unknown kind {kind!r}{did_you_mean(str(kind), KINDS)}; "
                       f"allowed: {', '.join(KINDS)}")
    return name, description, seed, kind


def run(path: Path, raw: Mapping, args: argparse.Namespace, command: str) -> int:
    """The CLI for experiment recipes; returns the exit status (ZooError propagates)."""
    from ..recipe import apply_overrides

    apply_overrides(raw, args.set)  # --set experiment.datasets=[...]: checked like the file
    name, _, seed, kind = header(raw, path)
    seed = args.seed if args.seed is not None else seed
    label = display_path(path)
    out_name = name + ("-smoke" if args.smoke else "")
    if kind == "uci_regression":
        return _uci(path, raw, args, command, label, out_name, seed)
    if kind in ("active_learning", "continual_learning"):
        return _learning(kind, raw, args, command, label, out_name, seed)
    return _calibration(raw, args, command, label, out_name, seed)


# -- [experiment] tables checked against a table of defaults ---------------------------------
def resolve_values(raw: Mapping, label: str, smoke: bool, defaults: Mapping[str, Any],
                   open_tables: Sequence[str] = ()) -> dict[str, Any]:
    """The defaults, overridden by [experiment] (less ``kind``) and, with ``smoke``, by [smoke].

    Every key must be one of the defaults' and have its type (an int where a float is
    expected is fine); a table merges key by key. ``open_tables`` are passed through unchecked
    for the caller to validate (e.g. inference settings). A ``ZooError`` names the key."""
    for key in raw:
        if key not in TOP_TABLES:
            raise ZooError(f"{label}: unknown key {key!r}{did_you_mean(key, TOP_TABLES)}; "
                           f"allowed: {', '.join(TOP_TABLES)}")
    exp = {k: v for k, v in raw["experiment"].items() if k != "kind"}
    values = _merge(defaults, exp, f"{label}: experiment", open_tables)
    if smoke:
        smoke_table = raw.get("smoke", {})
        if not isinstance(smoke_table, dict):
            raise ZooError(f"{label}: smoke must be a table, got {smoke_table!r}")
        values = _merge(values, smoke_table, f"{label}: smoke", open_tables)
    return values


def _merge(base: Mapping[str, Any], new: Mapping[str, Any], where: str,
           open_tables: Sequence[str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in new.items():
        if key not in base:
            raise ZooError(f"{where}: unknown key {key!r}{did_you_mean(key, base)}; allowed: "
                           f"{', '.join(base)}")
        default, here = base[key], f"{where}.{key}"
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ZooError(f"{here} must be a table, got {value!r}")
            out[key] = ({**default, **value} if key in open_tables
                        else _merge(default, value, here, open_tables))
        elif isinstance(default, list):
            if not isinstance(value, list) or not value:
                raise ZooError(f"{here} must be a non-empty list, got {value!r}")
            out[key] = [_scalar(v, default[0], f"{here}[{i}]") for i, v in enumerate(value)]
        else:
            out[key] = _scalar(value, default, here)
    return out


def _scalar(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ZooError(f"{where} must be {type(default).__name__}, got {value!r}")
    return value


def _learning(kind: str, raw: Mapping, args, command: str, label: str, out_name: str,
              seed: int) -> int:
    """active_learning and continual_learning: validate, run in this process, write the report."""
    from ..run import torch_threads

    if kind == "active_learning":
        from . import active as module
        open_tables: tuple[str, ...] = ("laplace",)
    else:
        from . import continual as module  # type: ignore[no-redef]
        open_tables = ()
    values = resolve_values(raw, label, args.smoke, module.DEFAULTS, open_tables)
    config = module.validate(values, f"{label}: experiment")
    if args.check:
        print(f"experiment {out_name}: {kind}")
        print(module.describe(config))
        print("ok: recipe is valid")
        return 0
    threads = args.threads or 1  # small tensors: one thread is fastest, and repeatable
    with torch_threads(threads):
        dest = module.run_and_report(config, seed, Path(args.out) / out_name, command,
                                     smoke=args.smoke, progress=not args.quiet)
    print(f"wrote {dest}/report.md")
    return 0


def _uci(path: Path, raw: Mapping, args, command: str, label: str, out_name: str, seed: int) -> int:
    from ..datasets.uci import load_uci, uci_root
    from ..cells import run_cells
    from ..executors import ExecutorOptions, validate as validate_options
    from . import uci_experiment as ux

    config = ux.validate(raw, label, args.smoke)
    splits = {}
    for d in config["datasets"]:
        n = load_uci(d, 0, root=config["root"])["n_splits"]
        k = n if config["splits"] == "all" else min(config["splits"], n)
        splits[d] = list(range(k))
    store = Path(args.out) / ".cells" / out_name
    cells = ux.make_cells(config["datasets"], splits, config["methods"], config["settings"], seed,
                          config["root"], store)
    if args.check:
        print(f"experiment {out_name}: uci_regression, {len(cells)} cells "
              f"({len(config['datasets'])} data sets x their splits x {len(config['methods'])} methods)")
        for d in config["datasets"]:
            print(f"  {d}: splits {splits[d][0]}..{splits[d][-1]}")
        for m in config["methods"]:
            print(f"  {m}: {config['settings'].get(m, {}) or '(defaults)'}")
        print("ok: recipe is valid")
        return 0
    options = ExecutorOptions(name=args.executor or "local", workers=args.workers,
                              threads=args.threads, address=args.address, fail_fast=args.fail_fast)
    validate_options(options)
    run_cells(ux.run_cell, cells, options, out_name, not args.quiet and sys.stdout.isatty(),
              args.rerun)  # failures: CellsFailed, reported by zoo.run like a grid's
    readme = uci_root(config["root"]).parent / "README.md"
    dest = ux.write_report(cells, Path(args.out) / out_name, command, readme)
    print(f"wrote {dest}/report.md, summary.csv, splits.csv")
    return 0


def _calibration(raw: Mapping, args, command: str, label: str, out_name: str, seed: int) -> int:
    from . import calibration_experiment as cx

    exp: dict[str, Any] = {k: v for k, v in raw["experiment"].items()}
    per_method = {m: dict(exp.pop(m)) for m in list(exp) if isinstance(exp[m], dict)}
    if args.smoke:
        for key, value in raw.get("smoke", {}).items():
            if isinstance(value, dict):
                per_method.setdefault(key, {}).update(value)
            else:
                exp[key] = value
    for key in exp:
        if key not in CALIBRATION_KEYS:
            raise ZooError(f"{label}: experiment: unknown key {key!r}"
                           f"{did_you_mean(key, CALIBRATION_KEYS)}; allowed: "
                           f"{', '.join(CALIBRATION_KEYS)} and a table per method")
    methods = exp.get("methods", list(cx.METHOD_NAMES))
    for m in list(methods) + list(per_method):
        if m not in cx.METHOD_NAMES:
            raise ZooError(f"{label}: experiment: unknown method {m!r}"
                           f"{did_you_mean(m, cx.METHOD_NAMES)}; allowed: {', '.join(cx.METHOD_NAMES)}")
    sizes = {k: int(exp.get(k, d)) for k, d in (("n_train", 300), ("n_val", 500), ("n_test", 5000))}
    if args.check:
        print(f"experiment {out_name}: calibration_classification, methods {', '.join(methods)}, "
              + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        print("ok: recipe is valid")
        return 0
    table, tables = cx.run(per_method, sizes["n_train"], sizes["n_val"], sizes["n_test"], seed,
                           methods)
    dest = cx.write_report(table, tables, Path(args.out) / out_name, command, sizes)
    print(f"wrote {dest}/report.md, metrics.csv")
    return 0
