"""Recipe grids: a ``[grid]`` table expands one recipe into many points.

    [grid]
    seed = "0..2"                       # the recipe's seed: 0, 1, 2
    split = "0..19"                     # a bare name is an argument of the data set
    "inference.svi.lr" = [0.01, 0.1]    # or any key --set takes, as a dotted path
    "data.dataset" = ["coin_flips", "binomial_synthetic"]

Each axis is an array of values or an inclusive integer range ``"a..b"``; the points are the
Cartesian product in the order the axes are written. A point is the recipe with its values
applied as ``--set`` overrides, so it is validated exactly like a recipe (before anything runs),
and every point × model × method is one cell (``zoo.cells``).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from .errors import ZooError
from .recipe import Recipe, display_path, find_recipe, load_recipe, read_toml

ALIASES = {"seed": "recipe.seed", "dataset": "data.dataset", "methods": "inference.methods"}
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class Point:
    """One grid point: its axis values and the recipe they give."""

    values: tuple[tuple[str, Any], ...]  # (axis as written, value), in axis order
    recipe: Recipe

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values) or "(the recipe as written)"


def axes(raw: dict, label: str) -> list[tuple[str, str, list]]:
    """``[grid]`` as (axis as written, dotted recipe path, values); nested tables flatten."""
    table = raw.get("grid", {})
    if not isinstance(table, dict):
        raise ZooError(f"{label}: [grid] must be a table, got {table!r}")
    out = []
    for axis, value in _flatten(table):
        path = ALIASES.get(axis, axis if "." in axis else f"data.args.{axis}")
        if axis.startswith("models"):
            raise ZooError(f"{label}: grid: {axis}: models are listed in [[models]], not gridded; "
                           "every model already runs at every grid point")
        values = _values(value, f"{label}: grid: {axis}")
        out.append((axis, path, values))
    return out


def _flatten(table: dict, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _values(value: Any, where: str) -> list:
    if isinstance(value, str):
        m = _RANGE.match(value)
        if not m:
            raise ZooError(f"{where}: expected an array or an integer range like \"0..19\", "
                           f"got {value!r}")
        lo, hi = int(m.group(1)), int(m.group(2))
        if hi < lo:
            raise ZooError(f"{where}: range {value!r} is empty (end before start)")
        return list(range(lo, hi + 1))
    if not isinstance(value, list) or not value:
        raise ZooError(f"{where}: expected a non-empty array or an integer range like \"0..19\", "
                       f"got {value!r}")
    if len({json.dumps(v, sort_keys=True) for v in value}) < len(value):
        raise ZooError(f"{where}: a value is listed twice in {value!r}")
    return value


def toml_literal(value: Any) -> str:
    """A Python value as the TOML literal ``--set`` parses back to it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)  # JSON strings and integers are valid TOML
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise ZooError(f"grid value {value!r} cannot be written as TOML")


def expand(name_or_path: str, overrides: Iterable[str] = (), smoke: bool = False,
           seed: int | None = None) -> list[Point]:
    """Every grid point of a recipe, each a fully validated ``Recipe`` (one point if the recipe
    has no ``[grid]``). An invalid point is an error naming the recipe, the point and the key."""
    path = find_recipe(name_or_path)
    label = display_path(path)
    raw = read_toml(path)
    grid = axes(raw, label)
    if seed is not None and any(p == "recipe.seed" for _, p, _ in grid):
        raise ZooError(f"--seed {seed} conflicts with the grid's seed axis in {label}")
    overrides = list(overrides)
    points = []
    for combo in itertools.product(*(values for _, _, values in grid)):
        sets = [f"{p}={toml_literal(v)}" for (_, p, _), v in zip(grid, combo)]
        values = tuple((axis, v) for (axis, _, _), v in zip(grid, combo))
        try:
            recipe = load_recipe(path, overrides=overrides + sets, smoke=smoke, seed=seed)
        except ZooError as e:
            if not grid:
                raise
            where = ", ".join(f"{k}={v}" for k, v in values)
            detail = str(e).removeprefix(label)  # " (--set ...): section: what is wrong"
            raise ZooError(f"{label}: grid point {where}{detail}") from None
        points.append(Point(values, recipe))
    return points
