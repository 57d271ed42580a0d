"""Data set tests: seeded generators reproduce, shipped data is right, posteriordb loads."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.datasets import (
    list_posteriors,
    load_posteriordb,
    posteriordb_reference,
    posteriordb_root,
    synthetic_truth,
)
from zoo.errors import ZooError
from zoo.registry import get_dataset, list_datasets, load_dataset

SEEDED = [
    "binomial_synthetic",
    "normal_synthetic",
    "linear_synthetic",
    "logistic_synthetic",
    "polynomial_synthetic",
]
# The shared reference data sit beside the checkout: <repo>/../shared/data (as in conftest.py).
SHARED_DATA = Path(
    os.environ.get("ZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
POSTERIORDB = SHARED_DATA / "posteriordb"
EIGHT_SCHOOLS_REF = "eight_schools-eight_schools_noncentered"
needs_posteriordb = pytest.mark.skipif(
    not (POSTERIORDB / EIGHT_SCHOOLS_REF).is_dir(),
    reason=f"{POSTERIORDB / EIGHT_SCHOOLS_REF} is absent (posteriordb's data: ../shared/data)",
)


def tensors(data: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in data.items() if torch.is_tensor(v)}


def write_posterior(root: Path, name: str, data: dict | None, chains: list | None) -> Path:
    """A fake posteriordb folder with the real layout (zipped JSON files)."""
    folder = root / name
    folder.mkdir(parents=True)
    for filename, content in (("data.json.zip", data), ("reference_draws.json.zip", chains)):
        if content is not None:
            with zipfile.ZipFile(folder / filename, "w") as archive:
                archive.writestr(filename.removesuffix(".zip"), json.dumps(content))
    return folder


# --------------------------------------------------------------------------------------------
# Synthetic and shipped data
# --------------------------------------------------------------------------------------------


def test_catalogue_names():
    expected = {"eight_schools", "coin_flips", "posteriordb", *SEEDED}
    assert expected <= set(list_datasets())
    for name in SEEDED:
        assert get_dataset(name).synthetic and get_dataset(name).summary_line


@pytest.mark.parametrize("name", SEEDED)
def test_same_seed_same_data(name):
    first, again, other = (load_dataset(name, seed=s) for s in (3, 3, 4))
    assert first.keys() == again.keys() == other.keys()
    for key, value in tensors(first).items():
        assert value.dtype == torch.float64
        assert torch.equal(value, again[key])
    # At least the observations change with the seed (a seed that is ignored would not).
    assert not torch.equal(first["y"], other["y"])


@pytest.mark.parametrize("name", ["linear_synthetic", "logistic_synthetic"])
def test_drawn_truth_follows_the_seed(name):
    first, again, other = (synthetic_truth(name, seed=s)["beta"] for s in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_coin_flips():
    data = load_dataset("coin_flips")
    assert torch.equal(data["n"], torch.tensor([100.0], dtype=torch.float64))
    assert torch.equal(data["y"], torch.tensor([50.0], dtype=torch.float64))
    assert load_dataset("coin_flips", n=10, heads=7)["y"].item() == 7
    with pytest.raises(ZooError, match="heads=11"):
        load_dataset("coin_flips", n=10, heads=11)


def test_binomial_synthetic():
    data = load_dataset("binomial_synthetic", groups=400, trials=20, p=0.3, seed=0)
    assert data["n"].shape == data["y"].shape == (400,)
    assert torch.all(data["n"] == 20)
    assert torch.all((data["y"] >= 0) & (data["y"] <= 20) & (data["y"] == data["y"].round()))
    # 8000 trials: the success rate is within 4 binomial standard errors (0.02) of p.
    assert abs(float(data["y"].sum() / data["n"].sum()) - 0.3) < 4 * (0.3 * 0.7 / 8000) ** 0.5
    assert synthetic_truth("binomial_synthetic", p=0.6) == {"p": 0.6}


def test_normal_synthetic():
    data = load_dataset("normal_synthetic", n=2000, mu=-2.0, sigma=0.5)
    assert data["N"] == 2000 and isinstance(data["N"], int)
    assert data["sigma"] == 0.5 and data["y"].shape == (2000,)
    assert abs(float(data["y"].mean()) + 2.0) < 4 * 0.5 / 2000**0.5
    assert float(data["y"].std()) == pytest.approx(0.5, rel=0.1)


def test_linear_synthetic_has_intercept_and_truth():
    data = load_dataset("linear_synthetic", n=500, d=4, noise=0.2, seed=1)
    x, y = data["x"], data["y"]
    assert x.shape == (500, 4) and y.shape == (500,)
    assert torch.all(x[:, 0] == 1.0)
    truth = synthetic_truth("linear_synthetic", n=500, d=4, noise=0.2, seed=1)
    residual = y.numpy() - x.numpy() @ truth["beta"]
    assert residual.std() == pytest.approx(0.2, rel=0.1)  # 500 draws: sd of the sd ~ 3%


def test_logistic_synthetic():
    data = load_dataset("logistic_synthetic", n=300, d=2, seed=5)
    assert data["x"].shape == (300, 2) and data["y"].shape == (300,)
    assert set(data["y"].unique().tolist()) == {0.0, 1.0}
    truth = synthetic_truth("logistic_synthetic", n=300, d=2, seed=5)
    assert truth["beta"].shape == (2,) and np.isscalar(truth["alpha"])


@pytest.mark.parametrize("degree", [0, 2, 5])
def test_polynomial_synthetic(degree):
    data = load_dataset("polynomial_synthetic", n=400, degree=degree, noise=0.1)
    x, y = data["x"].numpy(), data["y"].numpy()
    assert x.min() >= -1 and x.max() <= 1 and np.all(np.diff(x) >= 0)
    truth = synthetic_truth("polynomial_synthetic", n=400, degree=degree, noise=0.1)
    assert len(truth["beta"]) == degree + 1
    residual = y - np.polynomial.polynomial.polyval(x, truth["beta"])
    assert residual.std() == pytest.approx(0.1, rel=0.15)


def test_polynomial_default_truth_is_stated():
    assert synthetic_truth("polynomial_synthetic")["beta"].tolist() == [0.5, -1.0, 2.0]
    with pytest.raises(ZooError, match="degree=9"):
        load_dataset("polynomial_synthetic", degree=9)


def test_synthetic_truth_errors():
    with pytest.raises(ZooError, match="did you mean 'linear_synthetic'"):
        synthetic_truth("linear_synthtic")
    with pytest.raises(ZooError, match="bogus"):
        synthetic_truth("linear_synthetic", bogus=1)


def test_eight_schools_is_rubins_data():
    data = load_dataset("eight_schools")
    assert data["J"] == 8 and isinstance(data["J"], int)
    assert data["y"].tolist() == [28, 8, -3, 7, -1, 1, 18, 12]
    assert data["sigma"].tolist() == [15, 10, 16, 11, 9, 11, 10, 18]
    assert data["y"].dtype == data["sigma"].dtype == torch.float64


# --------------------------------------------------------------------------------------------
# posteriordb: the shared copy
# --------------------------------------------------------------------------------------------


@needs_posteriordb
def test_posteriordb_data_matches_shipped_eight_schools():
    data = load_posteriordb(EIGHT_SCHOOLS_REF, root=POSTERIORDB)
    assert data["J"] == 8 and isinstance(data["J"], int)  # sizes stay Python ints
    shipped = load_dataset("eight_schools")
    for key in ("y", "sigma"):
        assert data[key].dtype == torch.float64 and torch.equal(data[key], shipped[key])
    via_registry = load_dataset("posteriordb", posterior=EIGHT_SCHOOLS_REF, root=POSTERIORDB)
    assert torch.equal(via_registry["y"], data["y"])


@needs_posteriordb
def test_posteriordb_reference_shapes_and_order():
    ref = posteriordb_reference(EIGHT_SCHOOLS_REF, root=POSTERIORDB)
    assert ref["theta"].shape == (10, 1000, 8)
    assert ref["mu"].shape == ref["tau"].shape == (10, 1000)
    # theta[j] (1-based) must land at index j - 1 of every chain: compare with the raw file.
    path = Path(POSTERIORDB, EIGHT_SCHOOLS_REF, "reference_draws.json.zip")
    with zipfile.ZipFile(path) as archive:
        raw = json.loads(archive.read(archive.namelist()[0]))
    for chain in (0, 9):
        np.testing.assert_array_equal(ref["theta"][chain, :, 0], raw[chain]["theta[1]"])
        np.testing.assert_array_equal(ref["theta"][chain, :, 7], raw[chain]["theta[8]"])
        np.testing.assert_array_equal(ref["tau"][chain], raw[chain]["tau"])
    assert np.all(ref["tau"] > 0)


def test_default_root_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    write_posterior(tmp_path / "shared" / "data" / "posteriordb", "cwd-model", {"N": 4}, None)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.delenv("ZOO_POSTERIORDB", raising=False)
    assert list_posteriors() == ["cwd-model"]
    assert load_posteriordb("cwd-model") == {"N": 4}


def test_default_root_finds_the_shared_copy(tmp_path, monkeypatch):
    # From the repository root via ../shared, and from anywhere else via the checkout.
    repo = Path(__file__).resolve().parents[1]
    if not (repo.parent / "shared" / "data" / "posteriordb" / EIGHT_SCHOOLS_REF).is_dir():
        pytest.skip(f"no posteriordb copy at {repo.parent / 'shared' / 'data' / 'posteriordb'}")
    monkeypatch.delenv("ZOO_POSTERIORDB", raising=False)
    for cwd in (repo, tmp_path):
        monkeypatch.chdir(cwd)
        assert EIGHT_SCHOOLS_REF in list_posteriors()
        assert load_posteriordb(EIGHT_SCHOOLS_REF)["J"] == 8


# --------------------------------------------------------------------------------------------
# posteriordb: layout handling and errors, on fake folders
# --------------------------------------------------------------------------------------------


def test_reference_gathers_multi_indexed_parameters(tmp_path):
    chains = []
    for c in range(3):
        chain = {"s": [c + 0.5, c + 0.25]}
        for i in (1, 2):
            for j in (1, 2, 3):
                chain[f"a[{i},{j}]"] = [100 * c + 10 * i + j, -(100 * c + 10 * i + j)]
        chains.append(chain)
    write_posterior(tmp_path, "fake-model", {"N": 2, "x": [[1, 2], [3, 4]]}, chains)
    ref = posteriordb_reference("fake-model", root=tmp_path)
    assert ref["s"].shape == (3, 2) and ref["a"].shape == (3, 2, 2, 3)
    assert ref["a"][2, 0, 1, 2] == 223 and ref["a"][1, 1, 0, 1] == -112
    data = load_posteriordb("fake-model", root=tmp_path)
    assert data["N"] == 2 and data["x"].shape == (2, 2) and data["x"].dtype == torch.float64


def test_reference_rejects_missing_elements(tmp_path):
    chains = [{"theta[1]": [0.0], "theta[3]": [1.0]}]
    write_posterior(tmp_path, "gappy", {}, chains)
    with pytest.raises(ZooError, match="'theta' has 2 elements"):
        posteriordb_reference("gappy", root=tmp_path)


def test_missing_posterior_names_the_path_and_the_choices(tmp_path):
    write_posterior(tmp_path, "eight_schools-eight_schools_noncentered", {"J": 1}, None)
    write_posterior(tmp_path, "arK-arK", {"K": 1}, None)
    with pytest.raises(ZooError) as error:
        load_posteriordb("eight_schools-eight_schools_centered", root=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "eight_schools-eight_schools_centered") in message
    assert "did you mean 'eight_schools-eight_schools_noncentered'" in message
    assert "arK-arK" in message


def test_missing_file_is_named(tmp_path):
    write_posterior(tmp_path, "no-draws", {"N": 1}, None)
    with pytest.raises(ZooError, match="no-draws.reference_draws.json.zip' is missing"):
        posteriordb_reference("no-draws", root=tmp_path)


def test_missing_root_says_how_to_set_it(tmp_path):
    with pytest.raises(ZooError, match="ZOO_POSTERIORDB") as error:
        load_posteriordb("anything", root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)


def test_environment_variable_sets_the_root(tmp_path, monkeypatch):
    write_posterior(tmp_path, "env-model", {"N": 3}, None)
    monkeypatch.setenv("ZOO_POSTERIORDB", str(tmp_path))
    assert posteriordb_root() == tmp_path
    assert list_posteriors() == ["env-model"]
    assert load_posteriordb("env-model") == {"N": 3}
