"""The model and dataset registries.

As in timm, one decorator registers a model under its function's name and the family is the
module it lives in; as in gymnasium, each entry is a typed spec and an unknown name gets a
"did you mean". Tests loop over ``list_models()`` so a new model is tested without a new test.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .errors import unknown

METHODS = ("chees", "nuts", "svi", "laplace")
"""Inference methods a model may support; ``"mcmc"`` is an alias resolved by ``zoo.fit``."""

MCMC_METHODS = ("chees", "nuts")  # methods whose draws are Markov chains

Shape = tuple  # of ints and dimension names, e.g. ("N", "D")


@dataclass(frozen=True)
class ModelSpec:
    """A registered Pyro model and what the zoo knows about it.

    ``fn`` is a plain Pyro model whose observed values are keyword arguments defaulting to
    ``None`` (NumPyro style): ``fn(**covariates)`` simulates, ``fn(**data)`` conditions.
    ``data_shapes`` names each data key's shape with symbolic dimensions, so bad data gets an
    error naming the key; ``observed`` lists the keys that hold observations.
    ``exact_posterior(**data)`` returns a dict ``site -> torch Distribution`` of exact marginals
    (batch shape = the site's shape) and ``exact_log_evidence(**data)`` the exact log p(y).
    """

    name: str
    fn: Callable[..., Any]
    family: str
    description: str
    methods: tuple[str, ...] = METHODS
    observed: tuple[str, ...] = ("y",)
    data_shapes: Mapping[str, Shape] = field(default_factory=dict)
    guide: Callable[..., Any] | None = None
    default_dataset: str | None = None
    references: tuple[str, ...] = ()
    exact_posterior: Callable[..., dict] | None = None
    exact_log_evidence: Callable[..., float] | None = None
    vectorizable: bool = True  # plate-correct: draws can be batched under an outer plate
    posteriordb: tuple[str, ...] = ()  # posteriordb posteriors (data-model names) it serves

    @property
    def default_args(self) -> dict[str, Any]:
        """Arguments of ``default_dataset``'s loader for the default data: a posteriordb
        model's first posterior, nothing otherwise."""
        if self.default_dataset == "posteriordb" and self.posteriordb:
            return {"posterior": self.posteriordb[0]}
        return {}

    @property
    def summary_line(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""

    @property
    def arguments(self) -> tuple[str, ...]:
        """The keyword arguments the model accepts (data keys and hyperparameters)."""
        return tuple(inspect.signature(self.fn).parameters)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: ``loader(**args) -> dict`` of tensors keyed by model argument."""

    name: str
    loader: Callable[..., dict]
    description: str
    source: str = ""
    synthetic: bool = False

    @property
    def summary_line(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


_MODELS: dict[str, ModelSpec] = {}
_DATASETS: dict[str, DatasetSpec] = {}


def register_model(
    fn: Callable | None = None, *, name: str | None = None, family: str | None = None, **meta
):
    """Register ``fn`` as a model; usable bare (``@register_model``) or with metadata."""

    def wrap(f: Callable) -> Callable:
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        fam = family or f.__module__.rsplit(".", 1)[-1]
        _MODELS[key] = ModelSpec(
            name=key, fn=f, family=fam, description=meta.pop("description", f.__doc__ or ""), **meta
        )
        return f

    return wrap(fn) if fn is not None else wrap


def register_dataset(fn: Callable | None = None, *, name: str | None = None, **meta):
    """Register a data loader (``@register_dataset`` or with metadata)."""

    def wrap(f: Callable) -> Callable:
        key = name or f.__name__
        if key in _DATASETS:
            raise ValueError(f"dataset {key!r} is registered twice")
        _DATASETS[key] = DatasetSpec(
            name=key, loader=f, description=meta.pop("description", f.__doc__ or ""), **meta
        )
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded() -> None:
    # Importing the packages runs their @register_* decorators.
    from . import datasets, models  # noqa: F401


def get_model(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name gets a did-you-mean."""
    _ensure_loaded()
    if name not in _MODELS:
        raise unknown("model", name, _MODELS)
    return _MODELS[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob pattern, sorted."""
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def default_data(name: str) -> dict:
    """The default data of a registered model: ``default_dataset`` with ``default_args``."""
    spec = get_model(name)
    return load_dataset(spec.default_dataset, **spec.default_args)


def get_dataset(name: str) -> DatasetSpec:
    _ensure_loaded()
    if name not in _DATASETS:
        raise unknown("dataset", name, _DATASETS)
    return _DATASETS[name]


def list_datasets(pattern: str = "*") -> list[str]:
    _ensure_loaded()
    return sorted(n for n in _DATASETS if fnmatch.fnmatch(n, pattern))


def load_dataset(name: str, /, **args) -> dict:
    """Load a registered data set; unknown loader arguments are named in the error."""
    spec = get_dataset(name)
    allowed = inspect.signature(spec.loader).parameters
    for key in args:
        if key not in allowed:
            raise unknown(f"argument of dataset {name!r}:", key, allowed)
    return spec.loader(**args)
