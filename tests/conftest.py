"""Shared fixtures: smoke settings and the location of ../shared/data."""

from __future__ import annotations

import os
import pathlib
import warnings

import pytest
import torch

# The models here are tiny: one thread is faster than two fighting over small tensors, and a
# fixed count keeps floating-point reductions identical from machine to machine.
torch.set_num_threads(1)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("ZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Tiny settings: enough to exercise every code path, not to converge.
SMOKE = {
    # max_tree_depth 6: an unadapted step size on an 85-group model otherwise builds
    # 1023-step trees for the whole (tiny) warmup
    "nuts": {"num_warmup": 40, "num_samples": 40, "num_chains": 2, "max_tree_depth": 6},
    "chees": {"num_warmup": 60, "num_samples": 20, "num_chains": 16},
    "svi": {"num_steps": 200, "num_samples": 100, "lr": 0.05},
    "laplace": {"num_samples": 100, "adam_steps": 200},
}


def posteriordb_dir(name: str) -> pathlib.Path:
    path = SHARED_DATA / "posteriordb" / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the posteriordb reference data lives in ../shared/data")
    return path


@pytest.fixture(autouse=True)
def _quiet_convergence_warnings():
    # Smoke fits are not meant to converge; tests that care assert on fit.warnings.
    from zoo.errors import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield
