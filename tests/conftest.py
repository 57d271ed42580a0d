"""Shared fixtures: smoke settings and the location of ../shared/data."""

from __future__ import annotations

import os
import pathlib
import warnings

import numpy as np
import pyro
import pytest
import torch

# The models here are tiny: one thread is faster than two fighting over small tensors, and a
# fixed count keeps floating-point reductions identical from machine to machine.
torch.set_num_threads(1)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("ZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))

@pytest.fixture
def float64():
    """float64 default dtype and Pyro seed 0 (test modules opt in with ``pytestmark``): the
    zoo runs every model in float64, and closed forms are compared to ~1e-8."""
    from zoo.fit import default_dtype

    with default_dtype(torch.float64):
        pyro.set_rng_seed(0)
        yield


# Tiny settings: enough to exercise every code path, not to converge.
SMOKE = {
    # max_tree_depth 4 (<= 15 steps a draw): before the mass matrix adapts, hierarchical models
    # otherwise build maximal trees for the whole (tiny) warmup; the code path is the same
    "nuts": {"num_warmup": 30, "num_samples": 30, "num_chains": 2, "max_tree_depth": 4},
    # max_leapfrog 100: untuned warmup trajectories on a BNN otherwise run to the default 1000
    "chees": {"num_warmup": 60, "num_samples": 20, "num_chains": 16, "max_leapfrog": 100},
    "svi": {"num_steps": 200, "num_samples": 100, "lr": 0.05},
    "laplace": {"num_samples": 100, "adam_steps": 200},
}


def posteriordb_dir(name: str) -> pathlib.Path:
    path = SHARED_DATA / "posteriordb" / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the posteriordb reference data lives in ../shared/data")
    return path


# Families of posteriordb ports are represented by one model each in the registry-wide fits
# (the fast suite's budget: the HMM drive models take ~30 s a smoke fit); every model's density
# has its own test, and the slow suite fits each at its defaults against its reference.
REPRESENTATIVES = {"arm": "log10earn_height", "hmm": "hmm_example"}


def fit_models() -> list[str]:
    """Registered models for the registry-wide fitting tests: one per posteriordb family."""
    from zoo.registry import get_model, list_models

    return [n for n in list_models()
            if REPRESENTATIVES.get(get_model(n).family, n) == n]


def default_data(name: str) -> dict:
    """A registered model's default data; skips, saying why, when that data is a posteriordb
    posterior and ../shared/data is absent."""
    from zoo.registry import default_data as load_default, get_model

    spec = get_model(name)
    if spec.default_dataset == "posteriordb":
        posteriordb_dir(spec.default_args["posterior"])
    return load_default(name)


@pytest.fixture(autouse=True)
def _quiet_convergence_warnings():
    # Smoke fits are not meant to converge; tests that care assert on fit.warnings.
    from zoo.errors import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


class FixSubsample(pyro.poutine.messenger.Messenger):
    """Force the subsample indices that the plate named ``name`` would draw."""

    def __init__(self, name: str, idx: torch.Tensor):
        super().__init__()
        self.name, self.idx = name, idx

    def _pyro_sample(self, msg):
        if msg["name"] == self.name:
            msg["value"], msg["done"] = self.idx, True


def assert_matches_normal_normal(fit) -> None:
    """An SVI fit of normal_normal against its exact Gaussian posterior over mu: the guide's
    draws match the exact mean within 4 Monte Carlo standard errors plus 2% of a posterior sd
    (optimiser noise), and the sd within 10%."""
    import zoo
    from zoo.data import prepare
    from zoo.fit import default_dtype

    spec = zoo.get_model("normal_normal")
    with default_dtype(torch.float64):
        exact = spec.exact_posterior(**prepare(spec, fit.data))["mu"]
    draws = fit.posterior["mu"].ravel()
    sd = float(exact.stddev)
    assert abs(draws.mean() - float(exact.mean)) < 4 * sd / np.sqrt(draws.size) + 0.02 * sd
    assert abs(draws.std() / sd - 1) < 0.1
