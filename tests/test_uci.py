"""zoo.datasets.uci: the standard UCI splits from ../shared/data/uci, checked against the raw
files read here with numpy, and from tiny fake folders in the same layout (for the errors)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.datasets import uci
from zoo.datasets.uci import list_uci, load_uci, uci_root
from zoo.errors import ZooError
from zoo.registry import get_dataset

from conftest import SHARED_DATA

BOSTON = "bostonHousing"
PROTEIN = "protein-tertiary-structure"
NAVAL = "naval-propulsion-plant"


@pytest.fixture(scope="module")
def uci_dir() -> Path:
    path = SHARED_DATA / "uci"
    if not (path / BOSTON / "data.txt").is_file():
        pytest.skip(f"{path} is absent: the UCI reference data (CC BY-NC) lives in ../shared/data")
    return path


def raw(folder: Path, split: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, train rows, test rows) straight from the files."""
    data = np.loadtxt(folder / "data.txt", ndmin=2)
    features = np.loadtxt(folder / "index_features.txt", ndmin=1).astype(int)
    target = int(np.loadtxt(folder / "index_target.txt"))
    train = np.loadtxt(folder / f"index_train_{split}.txt", ndmin=1).astype(int)
    test = np.loadtxt(folder / f"index_test_{split}.txt", ndmin=1).astype(int)
    return data[:, features], data[:, target], train, test


def check_against_raw(d: dict, x: np.ndarray, y: np.ndarray, fit: np.ndarray,
                      held: np.ndarray) -> None:
    """``d`` is rows ``fit`` / ``held`` of (x, y), standardised with the ``fit`` rows' stats."""
    mean, sd = x[fit].mean(0), x[fit].std(0)
    np.testing.assert_allclose(d["x_train"].numpy(), (x[fit] - mean) / sd, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d["x_test"].numpy(), (x[held] - mean) / sd, rtol=1e-12, atol=1e-12)
    # y_mean and y_std undo the target's scaling exactly
    assert d["y_mean"] == pytest.approx(y[fit].mean()) and d["y_std"] == pytest.approx(y[fit].std())
    np.testing.assert_allclose(d["y_train"].numpy() * d["y_std"] + d["y_mean"], y[fit], rtol=1e-12)
    np.testing.assert_allclose(d["y_test"].numpy() * d["y_std"] + d["y_mean"], y[held], rtol=1e-12)


# --------------------------------------------------------------------------------------------
# The shared copy
# --------------------------------------------------------------------------------------------


def test_boston_has_twenty_splits_of_the_published_shapes(uci_dir):
    assert set(list_uci(uci_dir)) >= {BOSTON, PROTEIN, NAVAL}
    for split in range(20):
        d = load_uci(BOSTON, split, root=uci_dir)
        assert d["x_train"].shape == (455, 13) and d["y_train"].shape == (455,)
        assert d["x_test"].shape == (51, 13) and d["y_test"].shape == (51,)
        assert all(d[k].dtype == torch.float64 for k in ("x_train", "y_train", "x_test", "y_test"))
    assert (d["n_splits"], d["n_hidden"], d["n_epochs"]) == (20, 50, 40)
    assert d["dropout_rates"] == [0.005, 0.01, 0.05, 0.1] and d["tau_values"] == [0.1, 0.15, 0.2]
    assert isinstance(d["y_mean"], float) and isinstance(d["y_std"], float)
    with pytest.raises(ZooError, match=r"split 20 .* allowed 0\.\.19"):
        load_uci(BOSTON, 20, root=uci_dir)


def test_protein_has_five_splits(uci_dir):
    d = load_uci(PROTEIN, 4, root=uci_dir)
    assert (d["n_splits"], d["n_hidden"], d["n_epochs"]) == (5, 100, 20)
    assert d["x_train"].shape == (41157, 9) and d["x_test"].shape == (4573, 9)
    with pytest.raises(ZooError, match=r"allowed 0\.\.4"):
        load_uci(PROTEIN, 5, root=uci_dir)


@pytest.mark.parametrize("split", [0, 13])
def test_standardised_on_the_training_split(uci_dir, split):
    d = load_uci(BOSTON, split, root=uci_dir)
    x, y, train, test = raw(uci_dir / BOSTON, split)
    assert not set(train) & set(test)
    assert sorted([*train, *test]) == list(range(len(y)))  # a partition of the rows
    torch.testing.assert_close(d["x_train"].mean(0), torch.zeros(13, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(d["x_train"].std(0, unbiased=False),
                               torch.ones(13, dtype=torch.float64), rtol=1e-12, atol=0)
    assert abs(float(d["y_train"].mean())) < 1e-12
    assert float(d["y_train"].std(unbiased=False)) == pytest.approx(1.0, rel=1e-12)
    check_against_raw(d, x, y, train, test)


def test_validation_split_is_the_last_fifth_of_the_training_indices(uci_dir):
    d = load_uci(BOSTON, 3, root=uci_dir, validation=True)
    x, y, train, _ = raw(uci_dir / BOSTON, 3)
    cut = int(0.8 * len(train))  # Gal & Ghahramani's code; 364 of 455
    assert (len(d["y_train"]), len(d["y_test"])) == (364, 91) and cut == 364
    check_against_raw(d, x, y, train[:cut], train[cut:])
    assert d["n_splits"] == 20  # the protocol comes along unchanged


def test_constant_inputs_standardise_to_zero_not_nan(uci_dir):
    d = load_uci(NAVAL, 0, root=uci_dir)
    x = torch.cat([d["x_train"], d["x_test"]])
    assert torch.isfinite(x).all()
    sd = d["x_train"].std(0, unbiased=False)
    constant = sd == 0
    assert constant.sum() == 2  # two of naval's 16 inputs never change
    assert (x[:, constant] == 0).all()
    torch.testing.assert_close(sd[~constant], torch.ones(14, dtype=torch.float64))


def test_unknown_data_set_gets_a_did_you_mean(uci_dir):
    with pytest.raises(ZooError, match=r"unknown UCI data set .*'bostonHousng' "
                                       r"\(did you mean 'bostonHousing'\?\); allowed: .*concrete"):
        load_uci("bostonHousng", 0, root=uci_dir)


# --------------------------------------------------------------------------------------------
# Any folder in the layout
# --------------------------------------------------------------------------------------------

ROWS, SPLITS = 10, 2


def fake(root: Path, name: str = "toy") -> Path:
    """A tiny data set in the UCI layout: 10 rows, inputs in columns 0-2 (column 1 constant),
    the target in column 3, 2 splits of 8 / 2 rows."""
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.normal(size=(ROWS, 4)) * [1, 0, 3, 10] + [0, 7, 1, 50]
    np.savetxt(folder / "data.txt", data)
    (folder / "index_features.txt").write_text("0\n1\n2\n")
    (folder / "index_target.txt").write_text("3\n")
    for k in range(SPLITS):
        perm = rng.permutation(ROWS)
        np.savetxt(folder / f"index_train_{k}.txt", perm[:8], fmt="%d")
        np.savetxt(folder / f"index_test_{k}.txt", perm[8:], fmt="%d")
    for key, value in (("n_splits", SPLITS), ("n_hidden", 10), ("n_epochs", 5)):
        (folder / f"{key}.txt").write_text(f"{value}\n")
    (folder / "dropout_rates.txt").write_text("0.01\n0.1\n")
    (folder / "tau_values.txt").write_text("1.0\n")
    return folder


def test_a_fake_folder_in_the_layout_loads(tmp_path):
    folder = fake(tmp_path)
    assert list_uci(tmp_path) == ["toy"]
    for split in range(SPLITS):
        d = load_uci("toy", split, root=tmp_path)
        x, y, train, test = raw(folder, split)
        assert d["x_train"].shape == (8, 3) and d["x_test"].shape == (2, 3)
        assert (d["x_train"][:, 1] == 0).all() and (d["x_test"][:, 1] == 0).all()  # constant
        keep = [0, 2]
        np.testing.assert_allclose(d["x_train"][:, keep].numpy(),
                                   (x[train][:, keep] - x[train][:, keep].mean(0))
                                   / x[train][:, keep].std(0), rtol=1e-12)
        np.testing.assert_allclose(d["y_test"].numpy() * d["y_std"] + d["y_mean"], y[test])
    assert (d["n_splits"], d["n_hidden"], d["n_epochs"]) == (2, 10, 5)
    assert d["dropout_rates"] == [0.01, 0.1] and d["tau_values"] == [1.0]
    v = load_uci("toy", 1, root=tmp_path, validation=True)
    assert (len(v["y_train"]), len(v["y_test"])) == (6, 2)  # 8 · 4 // 5 = 6


def test_root_from_argument_env_or_beside_the_working_directory(tmp_path, monkeypatch):
    fake(tmp_path / "elsewhere")
    monkeypatch.setenv(uci.ENV_VAR, str(tmp_path / "elsewhere"))
    assert uci_root() == tmp_path / "elsewhere" and list_uci() == ["toy"]
    assert uci_root(tmp_path) == tmp_path  # the argument wins over the variable
    monkeypatch.delenv(uci.ENV_VAR)
    fake(tmp_path / "shared" / "data" / "uci", "other")
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert list_uci() == ["other"] and load_uci("other", 0)["x_train"].shape == (8, 3)


def test_registered_as_the_uci_dataset():
    spec = get_dataset("uci")
    assert spec.loader is load_uci and "UCI" in spec.summary_line
    assert list(inspect.signature(spec.loader).parameters) == ["name", "split", "root",
                                                               "validation"]


@pytest.mark.parametrize("missing", ["index_test_1.txt", "n_hidden.txt", "tau_values.txt",
                                     "index_features.txt", "data.txt"])
def test_a_missing_file_is_named(tmp_path, missing):
    (fake(tmp_path) / missing).unlink()
    with pytest.raises(ZooError, match=rf"toy/{missing}' is missing"):
        load_uci("toy", 1, root=tmp_path)


@pytest.mark.parametrize("file, text, message", [
    ("index_train_0.txt", "0\n1\n10\n", r"index_train_0.txt.*row index 10 out of range 0\.\.9"),
    ("index_test_0.txt", "-1\n", r"row index -1 out of range 0\.\.9"),
    ("index_features.txt", "0\n7\n", r"index_features.txt.*column index 7 out of range 0\.\.3"),
    ("index_target.txt", "4\n", r"column index 4 out of range 0\.\.3"),
    ("index_target.txt", "2\n", r"target column 2 is also listed in .*index_features.txt"),
    ("index_test_0.txt", "1.5\n", r"integer row indices, got 1.5"),
    ("n_splits.txt", "two\n", r"cannot read UCI file .*n_splits.txt"),
    ("n_splits.txt", "0\n", r"n_splits.txt' should hold one positive integer"),
])
def test_files_inconsistent_with_the_data_are_named(tmp_path, file, text, message):
    (fake(tmp_path) / file).write_text(text)
    with pytest.raises(ZooError, match=message):
        load_uci("toy", 0, root=tmp_path)


def test_bad_values_and_splits_are_named(tmp_path):
    folder = fake(tmp_path)
    with pytest.raises(ZooError, match=r"split 2 .* allowed 0\.\.1"):
        load_uci("toy", 2, root=tmp_path)
    for bad in (-1, 1.0, "0", True):
        with pytest.raises(ZooError, match=r"allowed 0\.\.1"):
            load_uci("toy", bad, root=tmp_path)
    train = (folder / "index_train_0.txt").read_text().split()
    (folder / "index_test_0.txt").write_text(train[0] + "\n")
    with pytest.raises(ZooError, match=r"in both index_train_0.txt and index_test_0.txt"):
        load_uci("toy", 0, root=tmp_path)
    data = (folder / "data.txt").read_text().splitlines()
    data[3] = " ".join(["nan", *data[3].split()[1:]])
    (folder / "data.txt").write_text("\n".join(data))
    with pytest.raises(ZooError, match=r"data.txt' has 1 non-finite value.*first at row 3"):
        load_uci("toy", 1, root=tmp_path)
    with pytest.raises(ZooError, match=r"UCI folder .*nowhere' .* does not exist"):
        load_uci("toy", 0, root=tmp_path / "nowhere")
