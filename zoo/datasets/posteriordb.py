"""Loaders for a local copy of posteriordb (stan-dev/posteriordb): data and reference draws.

A posterior is a folder ``<root>/<posterior>/`` holding ``data.json.zip`` (one JSON object)
and ``reference_draws.json.zip`` (a JSON list of chains, each mapping a Stan parameter name such
as ``"theta[1]"`` -- 1-based -- to its draws). The zoo does not ship these files; the root is
``root=``, else the environment variable ``ZOO_POSTERIORDB``, else ``../shared/data/posteriordb``
relative to the working directory (or to the checkout holding this package).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .shared import entries, shared_folder
from ..errors import ZooError, did_you_mean
from ..registry import register_dataset

ENV_VAR = "ZOO_POSTERIORDB"
DATA_FILE = "data.json.zip"
REFERENCE_FILE = "reference_draws.json.zip"

_PARAMETER = re.compile(r"^(?P<site>[^\[\]]+)(?:\[(?P<index>\d+(?:\s*,\s*\d+)*)\])?$")


def posteriordb_root(root: str | os.PathLike | None = None) -> Path:
    """The posteriordb folder: ``root``, else ``$ZOO_POSTERIORDB``, else the default
    ``../shared/data/posteriordb`` from the working directory (or, failing that, from the
    checkout this package lives in, so scripts run from a sub-folder still find it)."""
    return shared_folder("posteriordb", root, ENV_VAR)


def list_posteriors(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the posteriors (sub-folders with a data file) under the root, sorted."""
    return entries(posteriordb_root(root), DATA_FILE)


def _folder(posterior: str, root: str | os.PathLike | None) -> Path:
    base = posteriordb_root(root)
    if not base.is_dir():
        raise ZooError(
            f"posteriordb folder {str(base)!r} (resolved: {str(base.resolve())!r}) does not exist; "
            f"pass root= or set ${ENV_VAR} to a local copy of posteriordb's posteriors"
        )
    folder = base / posterior
    if not folder.is_dir():
        available = list_posteriors(base)
        raise ZooError(
            f"posterior {posterior!r} not found: no folder {str(folder)!r}"
            f"{did_you_mean(posterior, available)}; available under {str(base)!r}: "
            f"{', '.join(available) or '(none)'}"
        )
    return folder


def _read_zipped_json(path: Path) -> Any:
    if not path.is_file():
        raise ZooError(f"posteriordb file {str(path)!r} is missing")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith(".json")]
            if len(members) != 1:
                found = archive.namelist()
                raise ZooError(f"{str(path)!r} should hold one .json file, found {found}")
            return json.loads(archive.read(members[0]))
    except (zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ZooError(f"cannot read {str(path)!r}: {e}") from None


def _to_model_argument(value: Any) -> Any:
    # Stan's integer scalars (N, J, K) are sizes: keep them Python ints. Arrays become float64
    # tensors, as zoo.data would make them anyway.
    if isinstance(value, list):
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float64)
    return value


@register_dataset(
    name="posteriordb",
    source="posteriordb (stan-dev/posteriordb), read from a local copy; terms per data set",
)
def load_posteriordb(posterior: str, root: str | None = None) -> dict:
    """The data of a posteriordb posterior, e.g. "eight_schools-eight_schools_noncentered".

    Keys are Stan's data names; integers stay Python ints, arrays become float64 tensors.
    """
    raw = _read_zipped_json(_folder(posterior, root) / DATA_FILE)
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ZooError(f"{posterior}/{DATA_FILE} should hold a JSON object, got {kind}")
    return {key: _to_model_argument(value) for key, value in raw.items()}


def _parse(name: str) -> tuple[str, tuple[int, ...]]:
    match = _PARAMETER.match(name)
    if match is None:
        raise ZooError(f"cannot parse posteriordb parameter name {name!r}")
    index = match["index"]
    return match["site"], tuple(int(i) - 1 for i in index.split(",")) if index else ()


def posteriordb_reference(posterior: str, root: str | None = None) -> dict[str, np.ndarray]:
    """Reference draws grouped by site in the zoo's layout ``(chain, draw, *site_shape)``.

    Stan's 1-based element names are gathered into arrays: ``"theta[1]" .. "theta[8]"`` become
    ``theta`` of shape (chains, draws, 8); ``"beta[2,3]"`` is ``beta[..., 1, 2]``.
    """
    path = _folder(posterior, root) / REFERENCE_FILE
    chains = _read_zipped_json(path)
    if not isinstance(chains, list) or not chains or not all(isinstance(c, dict) for c in chains):
        raise ZooError(f"{str(path)!r} should hold a non-empty JSON list of chains (objects)")
    names = list(chains[0])
    for i, chain in enumerate(chains):
        if list(chain) != names:
            raise ZooError(
                f"{str(path)!r}: chain {i} has parameters {list(chain)}, chain 0 has {names}"
            )
    try:
        draws = np.asarray([[chain[n] for n in names] for chain in chains], dtype=np.float64)
    except ValueError as e:  # ragged: chains or parameters with different numbers of draws
        raise ZooError(
            f"{str(path)!r}: draws do not form a (chain, parameter, draw) array: {e}"
        ) from None
    draws = draws.transpose(0, 2, 1)  # (chain, parameter, draw) -> (chain, draw, parameter)

    elements: dict[str, dict[tuple[int, ...], int]] = {}
    for column, name in enumerate(names):
        site, index = _parse(name)
        elements.setdefault(site, {})[index] = column
    out = {}
    for site, columns in elements.items():
        ranks = {len(index) for index in columns}
        if len(ranks) != 1:
            raise ZooError(f"{str(path)!r}: parameter {site!r} mixes scalar and indexed names")
        shape = tuple(max(index[k] for index in columns) + 1 for k in range(ranks.pop()))
        if len(columns) != int(np.prod(shape)):
            raise ZooError(
                f"{str(path)!r}: parameter {site!r} has {len(columns)} elements, "
                f"not the {int(np.prod(shape))} its largest index {shape} implies"
            )
        value = np.empty(draws.shape[:2] + shape)
        for index, column in columns.items():
            value[(..., *index)] = draws[..., column]
        out[site] = value
    return out
