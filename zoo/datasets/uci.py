"""The UCI regression benchmarks with their standard train/test splits (Hernández-Lobato & Adams
2015; Gal & Ghahramani 2016; Lakshminarayanan et al. 2017), read from a local folder.

A data set is a folder ``<root>/<name>/`` holding

- ``data.txt``: a whitespace-separated matrix, one row per example;
- ``index_features.txt``, ``index_target.txt``: 0-based columns of the inputs and the target;
- ``index_train_K.txt``, ``index_test_K.txt``: 0-based rows of split K = 0 .. n_splits-1;
- the protocol: ``n_splits.txt``, ``n_hidden.txt``, ``n_epochs.txt`` (one integer each) and the
  MC-dropout grid ``dropout_rates.txt``, ``tau_values.txt`` (one number a line).

The zoo does not ship these files (CC BY-NC 4.0); the root is ``root=``, else the environment
variable ``ZOO_UCI``, else ``../shared/data/uci`` relative to the working directory (or to the
checkout holding this package).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .shared import entries, shared_folder
from ..errors import ZooError, unknown
from ..registry import register_dataset

ENV_VAR = "ZOO_UCI"
DATA_FILE = "data.txt"
FEATURES_FILE = "index_features.txt"
TARGET_FILE = "index_target.txt"
INT_FILES = ("n_splits", "n_hidden", "n_epochs")
GRID_FILES = ("dropout_rates", "tau_values")


def uci_root(root: str | os.PathLike | None = None) -> Path:
    """The UCI folder: ``root``, else ``$ZOO_UCI``, else ``../shared/data/uci`` from the working
    directory (or, failing that, from the checkout this package lives in)."""
    return shared_folder("uci", root, ENV_VAR)


def list_uci(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the data sets (sub-folders holding a ``data.txt``) under the root, sorted."""
    return entries(uci_root(root), DATA_FILE)


def _folder(name: str, root: str | os.PathLike | None) -> Path:
    base = uci_root(root)
    if not base.is_dir():
        raise ZooError(
            f"UCI folder {str(base)!r} (resolved: {str(base.resolve())!r}) does not exist; "
            f"pass root= or set ${ENV_VAR} to a folder of UCI data sets in the standard layout"
        )
    plain = isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name
    if not plain or not (base / name).is_dir():
        raise unknown(f"UCI data set in {str(base)!r}:", str(name), list_uci(base))
    return base / name  # a data set folder: a file missing from it is named when it is read


def _read(path: Path) -> np.ndarray:
    """A whitespace-separated numeric file as float64: 2-D for data.txt, flat otherwise."""
    if not path.is_file():
        raise ZooError(f"UCI file {str(path)!r} is missing (the layout: see zoo.datasets.uci)")
    matrix = path.name == DATA_FILE
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2 if matrix else 1)
    except ValueError as e:  # ragged rows, text where a number should be
        raise ZooError(f"cannot read UCI file {str(path)!r}: {e}") from None
    if values.size == 0:
        raise ZooError(f"UCI file {str(path)!r} is empty")
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        where = f"row {bad[0][0]}, column {bad[0][1]}" if matrix else f"line {bad[0][0] + 1}"
        raise ZooError(
            f"UCI file {str(path)!r} has {len(bad)} non-finite value(s), the first at {where}"
        )
    return values


def _indices(path: Path, size: int, what: str) -> np.ndarray:
    """0-based integer indices from ``path``, each in 0 .. size-1 (``what`` says of what)."""
    raw = _read(path)
    fractional = raw[raw != np.round(raw)]
    if len(fractional):
        raise ZooError(f"UCI file {str(path)!r} should hold integer {what} indices, "
                       f"got {fractional[0]}")
    bad = raw[(raw < 0) | (raw >= size)]
    if len(bad):
        raise ZooError(
            f"UCI file {str(path)!r}: {what} index {int(bad[0])} out of range 0..{size - 1} "
            f"({DATA_FILE} has {size} {what}s)"
        )
    return raw.astype(np.int64)


def _integer(path: Path) -> int:
    raw = _read(path)
    if raw.shape != (1,) or raw[0] != round(raw[0]) or raw[0] < 1:
        raise ZooError(
            f"UCI file {str(path)!r} should hold one positive integer, got {raw.tolist()}"
        )
    return int(raw[0])


def _standardise(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    """(mean, sd, [standardised train, *others]) with the training part's mean and sd per column.

    sd is the population sd (ddof 0, as in the published code). A column constant on the training
    part (exactly: max = min) gets mean = its value and sd = 1, so it standardises to exact zeros
    instead of 0/0 (naval-propulsion-plant has two such inputs).
    """
    mean, sd = train.mean(0), train.std(0)
    constant = np.ptp(train, 0) == 0
    mean = np.where(constant, train[0], mean)
    sd = np.where(constant, 1.0, sd)
    return mean, sd, [(a - mean) / sd for a in (train, *others)]


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)


@register_dataset(
    name="uci",
    source="UCI regression benchmarks with the standard splits (Hernández-Lobato & Adams 2015), "
    "read from a local copy; CC BY-NC 4.0",
)
def load_uci(name: str, split: int = 0, root: str | os.PathLike | None = None,
             validation: bool = False) -> dict:
    """A standard UCI regression split (e.g. name="bostonHousing", split=0), train-standardised.

    Inputs (per column) and target are standardised with the training rows' mean and sd.

    Returns float64 tensors ``x_train`` (N, D), ``y_train`` (N,), ``x_test``, ``y_test``;
    ``y_mean``, ``y_std`` (floats: y = y_std · y_standardised + y_mean); and the folder's protocol
    ``n_splits``, ``n_hidden``, ``n_epochs`` (ints), ``dropout_rates``, ``tau_values`` (lists).
    With ``validation=True`` the protocol's model-selection split replaces it: train = the first
    80% of the split's training indices, test = the remaining 20%, standardised on that 80%.
    """
    folder = _folder(name, root)
    protocol: dict = {key: _integer(folder / f"{key}.txt") for key in INT_FILES}
    protocol.update({key: _read(folder / f"{key}.txt").tolist() for key in GRID_FILES})
    n_splits = protocol["n_splits"]
    is_int = isinstance(split, (int, np.integer)) and not isinstance(split, bool)
    if not is_int or not 0 <= split < n_splits:
        raise ZooError(
            f"split {split!r} of UCI data set {name!r} is out of range: allowed 0..{n_splits - 1} "
            f"({folder / 'n_splits.txt'} says {n_splits})"
        )

    data = _read(folder / DATA_FILE)
    rows, cols = data.shape
    features = _indices(folder / FEATURES_FILE, cols, "column")
    target = _indices(folder / TARGET_FILE, cols, "column")
    if target.shape != (1,):
        raise ZooError(f"UCI file {str(folder / TARGET_FILE)!r} should hold one column index, "
                       f"got {target.tolist()}")
    if target[0] in features:  # the target among the inputs would leak the answer
        raise ZooError(f"UCI data set {name!r}: target column {target[0]} is also listed in "
                       f"{str(folder / FEATURES_FILE)!r}")
    train = _indices(folder / f"index_train_{split}.txt", rows, "row")
    test = _indices(folder / f"index_test_{split}.txt", rows, "row")
    shared = np.intersect1d(train, test)
    if len(shared):
        raise ZooError(f"UCI data set {name!r} split {split}: {len(shared)} row(s) are in both "
                       f"index_train_{split}.txt and index_test_{split}.txt, e.g. row {shared[0]}")
    if validation:
        # Gal & Ghahramani's code takes int(0.8 · n); n·4//5 is the same number without floats.
        cut = len(train) * 4 // 5
        if cut == 0 or cut == len(train):
            raise ZooError(f"UCI data set {name!r} split {split}: {len(train)} training rows are "
                           f"too few for an 80/20 validation split")
        train, test = train[:cut], train[cut:]

    x, y = data[:, features], data[:, target[0]]
    _, _, (x_train, x_test) = _standardise(x[train], x[test])
    y_mean, y_std, (y_train, y_test) = _standardise(y[train], y[test])
    return {
        "x_train": _tensor(x_train),
        "y_train": _tensor(y_train),
        "x_test": _tensor(x_test),
        "y_test": _tensor(y_test),
        "y_mean": float(y_mean),
        "y_std": float(y_std),
        **protocol,
    }
