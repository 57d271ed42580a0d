"""Recipes: one TOML file per run, validated strictly before anything runs.

A recipe names a data set, the models to fit to it, the inference methods and their settings,
tiny ``[smoke]`` settings for a quick run, and optionally posteriordb reference draws. Every
error is one line naming the file (or the ``--set`` that caused it), the key and what is
allowed, with a close match where there is one. The settings rules themselves live in
``zoo.inference.validate_settings``; this module only says where each value came from.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import tomllib

from . import registry
from .errors import ZooError, did_you_mean
from .evidence import ESTIMATORS
from .inference.settings import SETTINGS, validate_settings

SECTIONS = ("recipe", "data", "models", "inference", "smoke", "reference", "evidence", "grid")
# [grid] is read by zoo.grid, which applies each point's values as overrides before loading
REQUIRED = ("recipe", "data", "models", "inference")
RECIPE_KEYS = ("name", "description", "seed", "executor")
DATA_KEYS = ("dataset", "args")
MODEL_KEYS = ("name", "label", "args")
REFERENCE_KEYS = ("posteriordb", "root")
EVIDENCE_KEYS = ("estimators", "prior", "bridge_proposal")
BRIDGE_PROPOSALS = ("normal", "warp3")
COMMON_EXTRA = ("dtype",)  # handled by zoo.fit itself, valid for every method
DTYPES = ("float64", "float32")
ALIASES = {"mcmc": "chees"}  # recipes may say "mcmc"; results are labelled by the real method


@dataclass(frozen=True)
class ModelEntry:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # how results name this entry; the model name unless the recipe says

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


@dataclass
class Recipe:
    """A validated recipe with every method's settings resolved (smoke applied if asked)."""

    name: str
    description: str
    path: Path
    seed: int
    dataset: str
    data_args: dict[str, Any]
    models: list[ModelEntry]
    methods: list[str]
    settings: dict[str, dict[str, Any]]  # method -> keys the recipe set (passed to zoo.fit)
    resolved: dict[str, dict[str, Any]]  # method -> every setting, defaults included
    dtype: str | None = None
    reference: dict[str, Any] | None = None
    evidence: dict[str, Any] | None = None  # [evidence]: estimators, prior, bridge_proposal
    smoke: bool = False
    overrides: list[str] = field(default_factory=list)
    executor: str | None = None  # [recipe] executor: the default for --executor

    @property
    def runs(self) -> list[tuple[str, str]]:
        """(label, method) pairs in the order they run."""
        return [(m.label, meth) for m in self.models for meth in self.methods]

    def fit_kwargs(self, method: str) -> dict[str, Any]:
        """Keyword arguments for ``zoo.fit`` besides model, data and method."""
        kw = dict(self.settings[method], seed=self.seed)
        if self.dtype:
            kw["dtype"] = self.dtype
        return kw


# -- finding recipes ------------------------------------------------------------------------
def recipe_dirs() -> list[Path]:
    """``recipes/`` next to the ``zoo`` package, then the working directory's."""
    dirs = [Path(__file__).resolve().parent.parent / "recipes", Path.cwd() / "recipes"]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def list_recipes() -> dict[str, Path]:
    """Recipe name -> file, the package's folder winning over the working directory's."""
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe name (``eight_schools``) or a path to a TOML file."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text or "/" in text:
        if not path.is_file():
            raise ZooError(f"recipe file {text!r} does not exist")
        return path
    recipes = list_recipes()
    if text not in recipes:
        where = ", ".join(str(d) for d in recipe_dirs()) or "no recipes/ folder found"
        raise ZooError(
            f"unknown recipe {text!r}{did_you_mean(text, recipes)}; "
            f"allowed: {', '.join(recipes) or '(none)'} (searched {where})"
        )
    return recipes[text]


def read_toml(path: Path) -> dict:
    """A recipe file's TOML; a syntax error is a one-line ZooError naming the file."""
    try:
        return tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ZooError(f"{display_path(Path(path))}: invalid TOML: {e}") from None


def display_path(path: Path) -> str:
    """The path as a person would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# -- --set overrides ------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"inference.nuts.num_warmup=200"`` -> (["inference", "nuts", "num_warmup"], 200).

    Values are TOML literals (``200``, ``0.9``, ``true``, ``["nuts", "svi"]``, ``"x"``); a bare
    word that is not valid TOML is taken as a string so ``--set data.dataset=coin_flips`` works.
    """
    key, sep, value = text.partition("=")
    path = [p.strip() for p in key.strip().split(".")]
    if not sep or not all(path):
        raise ZooError(
            f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. inference.num_samples=200"
        )
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return path, parsed


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict[str, str]:
    """Apply ``--set`` values to the parsed TOML in place; returns dotted key -> the --set text."""
    applied: dict[str, str] = {}
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            if part.isdigit() or path[0] == "models":
                raise ZooError(
                    f"--set {text}: [[models]] cannot be set entry by entry; replace the list, "
                    f"e.g. --set 'models=[{{name=\"normal_normal\"}}]'"
                )
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ZooError(f"--set {text}: {'.'.join(path[: i + 1])} is not a table")
        node[path[-1]] = value
        applied[".".join(path)] = text
    return applied


# -- validation -----------------------------------------------------------------------------
class _Checker:
    """Carries the file label and the --set overrides so each error names its origin."""

    def __init__(self, label: str, overrides: Mapping[str, str]):
        self.label = label
        self.overrides = overrides

    def where(self, section: str, key: str | None = None) -> str:
        """``file: section`` or, when a --set wrote there, ``file (--set k=v): section``."""
        dotted = f"{section}.{key}" if key else section
        if section.startswith("models[") and "models" in self.overrides:  # --set models=[...]
            return f"{self.label} (--set {self.overrides['models']}): {section}"
        for path, text in self.overrides.items():
            parent = path.rpartition(".")[0]
            hit = parent == section if key is None else path == dotted or path.startswith(dotted + ".")
            if hit:
                return f"{self.label} (--set {text}): {section}"
        return f"{self.label}: {section}"

    def error(self, section: str, msg: str, key: str | None = None) -> ZooError:
        return ZooError(f"{self.where(section, key)}: {msg}")

    def keys(self, section: str, table: Mapping, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in table:
            if key not in allowed:
                raise self.error(
                    section,
                    f"unknown key {key!r}{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}",
                    key,
                )

    def typed(self, section: str, table: Mapping, key: str, kind: type | tuple, required=False, default=None):
        if key not in table:
            if required:
                raise self.error(section, f"missing required key {key!r}")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            readable = {dict: "table", list: "array", str: "string"}
            names = " or ".join(readable.get(k, k.__name__) for k in kinds)
            raise self.error(section, f"{key} must be {names}, got {value!r}", key)
        return value

    def table(self, raw: Mapping, section: str, required: bool) -> dict:
        if section not in raw:
            if required:
                raise ZooError(f"{self.label}: missing [{section}] table")
            return {}
        if not isinstance(raw[section], dict):
            raise self.error(section, f"[{section}] must be a table, got {raw[section]!r}")
        return raw[section]


def _method_fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(SETTINGS[method])}


def _all_methods() -> list[str]:
    return list(SETTINGS)


def _inference_table(
    ck: _Checker, section: str, table: dict, need_methods: bool
) -> tuple[list[str] | None, dict, dict]:
    """Split ``[inference]`` / ``[smoke]`` into (methods, common keys, per-method tables)."""
    methods_all = _all_methods()
    common_keys = sorted(set().union(*(_method_fields(m) for m in methods_all)) | set(COMMON_EXTRA))
    allowed = ["methods"] + methods_all + list(ALIASES) + common_keys
    ck.keys(section, table, allowed)
    methods = ck.typed(section, table, "methods", list, required=need_methods)
    if methods is not None:
        if not methods:
            raise ck.error(section, "methods must name at least one method", "methods")
        out = []
        for m in methods:
            if not isinstance(m, str):
                raise ck.error(section, f"methods must be strings, got {m!r}", "methods")
            m = ALIASES.get(m, m)
            if m not in methods_all:
                raise ck.error(
                    section,
                    f"unknown method {m!r}{did_you_mean(m, methods_all)}; "
                    f"allowed: {', '.join(methods_all + list(ALIASES))}",
                    "methods",
                )
            if m in out:
                raise ck.error(section, f"method {m!r} is listed twice", "methods")
            out.append(m)
        methods = out
    common = {k: v for k, v in table.items() if k in common_keys}
    if "dtype" in common and common["dtype"] not in DTYPES:
        raise ck.error(section, f"dtype must be one of {', '.join(DTYPES)}, got {common['dtype']!r}", "dtype")
    per_method = {}
    for key in methods_all + list(ALIASES):
        if key in table:
            per_method[ALIASES.get(key, key)] = ck.typed(section, table, key, dict)
    # Validate every value where it was written, including tables of methods not run now
    # (a typo in [inference.svi] should not wait until someone runs svi).
    for m in methods_all:
        mine = {k: v for k, v in common.items() if k in _method_fields(m)}
        validate_settings(m, mine, where=ck.where(section))
        if m in per_method:
            validate_settings(m, per_method[m], where=ck.where(f"{section}.{m}"))
    return methods, common, per_method


def _settings(method: str, layers: list[tuple[dict, dict]]) -> dict[str, Any]:
    """Merge common then per-method keys of each layer ([inference], then [smoke])."""
    fields = _method_fields(method)
    merged: dict[str, Any] = {}
    for common, per_method in layers:
        merged.update({k: v for k, v in common.items() if k in fields})
        merged.update(per_method.get(method, {}))
    return merged


def _models(ck: _Checker, raw: Any, methods: list[str]) -> list[ModelEntry]:
    if not isinstance(raw, list) or not raw:
        raise ck.error("models", f"[[models]] must be a non-empty array of tables, got {raw!r}")
    entries: list[ModelEntry] = []
    for i, item in enumerate(raw):
        section = f"models[{i}]"
        if isinstance(item, str):  # convenience for --set models=["a", "b"]
            item = {"name": item}
        if not isinstance(item, dict):
            raise ck.error("models", f"entry {i} must be a table, got {item!r}")
        ck.keys(section, item, MODEL_KEYS)
        name = ck.typed(section, item, "name", str, required=True)
        try:
            spec = registry.get_model(name)
        except ZooError as e:
            raise ck.error(section, str(e), "name") from None
        label = ck.typed(section, item, "label", str, default=name)
        if not label.strip():
            raise ck.error(section, "label must not be empty", "label")
        args = ck.typed(section, item, "args", dict, default={})
        params = spec.arguments
        for key in args:
            if key not in params:
                raise ck.error(
                    section,
                    f"model {name!r} has no argument {key!r}{did_you_mean(key, params)}; "
                    f"allowed: {', '.join(params)}",
                    "args",
                )
            if key in spec.observed:
                raise ck.error(
                    section, f"{key!r} is observed data of model {name!r}; it comes from [data]", "args"
                )
        for m in methods:
            if m not in spec.methods:
                raise ck.error(
                    section,
                    f"model {name!r} does not support method {m!r}; it supports {', '.join(spec.methods)}",
                    "name",
                )
        if any(e.label == label for e in entries):
            what = f"label {label!r}" if "label" in item else f"model {name!r}"
            raise ck.error(section, f"{what} is listed twice; give each entry a distinct label "
                           "(label = \"...\")", "label" if "label" in item else "name")
        entries.append(ModelEntry(name, dict(args), label))
    return entries


def load_recipe(
    name_or_path: str | os.PathLike,
    overrides: Iterable[str] = (),
    smoke: bool = False,
    seed: int | None = None,
) -> Recipe:
    """Read, override and validate a recipe; raises ``ZooError`` with a one-line message."""
    path = find_recipe(name_or_path)
    label = display_path(path)
    raw = read_toml(path)
    overrides = list(overrides)
    ck = _Checker(label, apply_overrides(raw, overrides))
    ck.keys("top level", raw, SECTIONS)
    for section in REQUIRED:
        if section not in raw:
            raise ZooError(f"{label}: missing [{'[models]' if section == 'models' else section}] table")

    rec = ck.table(raw, "recipe", True)
    ck.keys("recipe", rec, RECIPE_KEYS)
    name = ck.typed("recipe", rec, "name", str, required=True)
    if name != path.stem:
        raise ck.error("recipe", f"name {name!r} must equal the file's stem {path.stem!r}", "name")
    description = ck.typed("recipe", rec, "description", str, required=True)
    seed = ck.typed("recipe", rec, "seed", int, default=0) if seed is None else seed
    if seed < 0:
        raise ck.error("recipe", f"seed must be >= 0, got {seed}", "seed")
    executor = ck.typed("recipe", rec, "executor", str, default=None)
    from .executors import EXECUTORS

    if executor is not None and executor not in EXECUTORS:
        raise ck.error("recipe", f"unknown executor {executor!r}{did_you_mean(executor, EXECUTORS)}; "
                       f"allowed: {', '.join(EXECUTORS)}", "executor")

    data = ck.table(raw, "data", True)
    ck.keys("data", data, DATA_KEYS)
    dataset = ck.typed("data", data, "dataset", str, required=True)
    try:
        loader = registry.get_dataset(dataset).loader
    except ZooError as e:
        raise ck.error("data", str(e), "dataset") from None
    data_args = ck.typed("data", data, "args", dict, default={})
    loader_params = inspect.signature(loader).parameters
    for key in data_args:
        if key not in loader_params:
            raise ck.error(
                "data",
                f"dataset {dataset!r} has no argument {key!r}{did_you_mean(key, loader_params)}; "
                f"allowed: {', '.join(loader_params) or '(none)'}",
                "args",
            )

    methods, common, per_method = _inference_table(ck, "inference", ck.table(raw, "inference", True), True)
    layers = [(common, per_method)]
    smoke_table = ck.table(raw, "smoke", False)
    s_methods, s_common, s_per_method = _inference_table(ck, "smoke", smoke_table, False)
    if smoke:
        if "smoke" not in raw:
            raise ZooError(f"{label}: --smoke needs a [smoke] table of tiny settings")
        layers.append((s_common, s_per_method))
        methods = s_methods or methods

    models = _models(ck, raw["models"], methods)
    settings = {m: _settings(m, layers) for m in methods}
    resolved = {
        m: dataclasses.asdict(validate_settings(m, settings[m], where=ck.where("inference", m)))
        for m in methods
    }
    dtype = common.get("dtype")
    if smoke and "dtype" in s_common:
        dtype = s_common["dtype"]

    reference = None
    if "reference" in raw:
        ref = ck.table(raw, "reference", False)
        ck.keys("reference", ref, REFERENCE_KEYS)
        reference = {
            "posteriordb": ck.typed("reference", ref, "posteriordb", str, required=True),
            "root": ck.typed("reference", ref, "root", str, default=None),
        }

    evidence = _evidence(ck, raw, [m.label for m in models]) if "evidence" in raw else None

    return Recipe(
        name=name,
        description=description,
        path=path,
        seed=seed,
        dataset=dataset,
        data_args=dict(data_args),
        models=models,
        methods=methods,
        settings=settings,
        resolved=resolved,
        dtype=dtype,
        reference=reference,
        evidence=evidence,
        smoke=smoke,
        overrides=overrides,
        executor=executor,
    )


def _evidence(ck: _Checker, raw: Mapping, labels: list[str]) -> dict[str, Any]:
    """``[evidence]``: which estimators to run, the prior over models, the bridge proposal."""
    table = ck.table(raw, "evidence", False)
    ck.keys("evidence", table, EVIDENCE_KEYS)
    estimators = ck.typed("evidence", table, "estimators", list, required=True)
    if not estimators:
        raise ck.error("evidence", "estimators must name at least one estimator", "estimators")
    for e in estimators:
        if e not in ESTIMATORS:
            raise ck.error("evidence", f"unknown estimator {e!r}{did_you_mean(str(e), ESTIMATORS)}; "
                           f"allowed: {', '.join(ESTIMATORS)}", "estimators")
    if len(set(estimators)) < len(estimators):
        raise ck.error("evidence", f"estimators lists one twice: {estimators}", "estimators")
    proposal = ck.typed("evidence", table, "bridge_proposal", str, default="normal")
    if proposal not in BRIDGE_PROPOSALS:
        raise ck.error("evidence", f"unknown bridge_proposal {proposal!r}"
                       f"{did_you_mean(proposal, BRIDGE_PROPOSALS)}; allowed: "
                       f"{', '.join(BRIDGE_PROPOSALS)}", "bridge_proposal")
    prior = ck.typed("evidence", table, "prior", dict, default=None)
    if prior is not None:
        for label, p in prior.items():
            if label not in labels:
                raise ck.error("evidence", f"prior names {label!r}, which is no model label"
                               f"{did_you_mean(label, labels)}; labels: {', '.join(labels)}", "prior")
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
                raise ck.error("evidence", f"prior[{label!r}] must be a positive number, got {p!r}",
                               "prior")
        missing = [label for label in labels if label not in prior]
        if missing:
            raise ck.error("evidence", f"prior must give every model a probability; missing "
                           f"{', '.join(missing)}", "prior")
        if abs(sum(prior.values()) - 1.0) > 1e-6:
            raise ck.error("evidence", f"prior probabilities must sum to 1, got "
                           f"{sum(prior.values()):.6g}", "prior")
    return {"estimators": list(estimators), "prior": prior, "bridge_proposal": proposal}


def load_data(recipe: Recipe) -> dict[str, Any]:
    """The recipe's data set, loaded through the registry; a loader's error names the recipe."""
    try:
        return registry.load_dataset(recipe.dataset, **recipe.data_args)
    except ZooError as e:
        raise ZooError(f"{display_path(recipe.path)}: data {recipe.dataset!r}: {e}") from None


def check_data(recipe: Recipe, data: Mapping[str, Any] | None = None) -> None:
    """Check the data fits every model (missing observed keys, shapes) without fitting."""
    from .data import prepare

    data = load_data(recipe) if data is None else data
    for entry in recipe.models:
        spec = registry.get_model(entry.name)
        try:
            prepare(spec, {**data, **entry.args})
        except ZooError as e:
            raise ZooError(f"{display_path(recipe.path)}: data {recipe.dataset!r}: {e}") from None
