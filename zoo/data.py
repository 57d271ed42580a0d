"""Checking and converting user data before any model sees it.

Every failure names the key, what was found and what is allowed, so a recipe author can act on
the one-line message (the CLI turns a ``ZooError`` into exit status 2).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import numpy as np
import torch

from .errors import ZooError, unknown
from .registry import ModelSpec


def to_tensor(key: str, value: Any, dtype: torch.dtype) -> Any:
    """Arrays and lists become tensors: integer ones stay int64 (index arrays such as ``a[g]``
    need it), the rest take the fit's float ``dtype``. Python scalars and None stay as they are
    (sizes and hyperparameters, e.g. ``J=8``). Observed values are made float by ``prepare``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if torch.is_tensor(value):
        t = value
    else:
        try:
            a = np.asarray(value)
            if a.dtype.kind not in "iu":
                a = np.asarray(value, dtype=float)
            t = torch.as_tensor(a)
        except (TypeError, ValueError) as e:
            raise ZooError(f"data[{key!r}] is not numeric: {e}") from None
    if is_integer(t):
        return t.to(torch.int64)
    if not (t.is_floating_point() or t.dtype == torch.bool):
        raise ZooError(f"data[{key!r}] has dtype {t.dtype}; allowed: integer, bool or float arrays")
    t = t.to(dtype)
    if torch.isnan(t).any() or torch.isinf(t).any():
        bad = torch.nonzero(~torch.isfinite(t)).tolist()[:5]
        raise ZooError(
            f"data[{key!r}] has {int((~torch.isfinite(t)).sum())} NaN/inf values "
            f"(first at index {bad}); remove or impute them"
        )
    return t


def is_integer(t: Any) -> bool:
    return torch.is_tensor(t) and not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def as_float(data: Mapping[str, Any], keys, dtype: torch.dtype) -> dict:
    """``data`` with the integer arrays among ``keys`` (observed values: counts, coin flips)
    in the float ``dtype`` that distributions' log densities expect."""
    return {k: v.to(dtype) if k in keys and is_integer(v) else v for k, v in data.items()}


def to_device(data: Mapping[str, Any], device: torch.device | str) -> dict:
    """``data`` with every tensor on ``device`` (Python scalars, sizes and hyperparameters, stay)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}


def prepare(
    spec: ModelSpec, data: Mapping[str, Any], dtype: torch.dtype = torch.float64, fitting: bool = True
) -> dict:
    """Validate ``data`` against the model's signature and declared shapes; return tensors.

    ``fitting=True`` requires every observed key; symbolic dimensions in ``spec.data_shapes``
    (``("N", "D")``) must agree across keys and with scalar data of the same name.
    """
    if not isinstance(data, Mapping):
        raise ZooError(f"data for model {spec.name!r} must be a dict of arrays, got {type(data).__name__}")
    params = inspect.signature(spec.fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_any:
        for key in data:
            if key not in params:
                raise unknown(f"data key for model {spec.name!r}:", key, params)
    out = {k: to_tensor(k, v, dtype) for k, v in data.items()}
    missing = [
        k
        for k, p in params.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and k not in out
        and (p.default is p.empty or (fitting and k in spec.observed))
    ]
    if missing:
        raise ZooError(
            f"data for model {spec.name!r} is missing {', '.join(map(repr, missing))} "
            f"(it needs {', '.join(k for k in params if k in spec.data_shapes or k in spec.observed)})"
        )
    _check_shapes(spec, out)
    return as_float(out, spec.observed, dtype)


def _check_shapes(spec: ModelSpec, data: dict) -> None:
    sizes: dict[str, int] = {}
    for key, value in data.items():  # scalar data named like a dimension fixes it
        if isinstance(value, int) and not isinstance(value, bool):
            sizes[key] = value
    for key, shape in spec.data_shapes.items():
        value = data.get(key)
        if value is None or not torch.is_tensor(value):
            continue
        got = tuple(value.shape)
        if len(got) != len(shape):
            raise ZooError(
                f"data[{key!r}] has shape {got}; model {spec.name!r} expects {_fmt(shape)}"
            )
        for dim, n in zip(shape, got):
            if isinstance(dim, int):
                ok = dim == n
            else:
                ok = sizes.setdefault(dim, n) == n
            if not ok:
                raise ZooError(
                    f"data[{key!r}] has shape {got}; model {spec.name!r} expects {_fmt(shape)} "
                    f"with {', '.join(f'{d}={sizes[d]}' for d in shape if d in sizes)}"
                )


def _fmt(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
