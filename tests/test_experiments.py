"""The network benchmark recipes ([experiment]): their smoke runs write complete reports, and
bad input is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo import run
from zoo.bdl.calibration_experiment import bayes_optimal_probs, make_data
from zoo.bdl.uci_experiment import published

from conftest import SHARED_DATA

UCI = SHARED_DATA / "uci"


def test_calibration_recipe_smoke_writes_metrics_for_every_method(tmp_path):
    assert run.main(["calibration_classification", "--smoke", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "calibration_classification-smoke"
    text = (folder / "report.md").read_text()
    for method in ("map", "bnn_mlp", "mc_dropout_mlp", "deep_ensemble", "laplace_last_layer",
                   "laplace_kron"):
        assert f"| {method} |" in text and f"| {method} + T |" in text, method
    assert (folder / "figures" / "reliability.png").is_file()


def test_bayes_optimal_probabilities_are_the_posterior_class_probabilities():
    # Bayes' rule by hand for one point: equal priors, Gaussian likelihoods.
    import torch

    x, _ = make_data(5, 0)
    mu = torch.tensor([(0.0, 1.5), (-1.3, -0.75), (1.3, -0.75)], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=torch.float64)
    lik = torch.stack([torch.distributions.MultivariateNormal(m, cov).log_prob(x) for m in mu], -1)
    assert torch.allclose(bayes_optimal_probs(x), torch.softmax(lik, -1), atol=1e-12)


def test_uci_recipe_smoke_resumes_and_reports(tmp_path, capsys):
    if not (UCI / "bostonHousing").is_dir():
        pytest.skip(f"{UCI} is absent: the UCI splits live in ../shared/data")
    args = ["uci_regression", "--smoke", "--executor", "serial", "--out", str(tmp_path)]
    assert run.main(args) == 0
    assert "8 run now" in capsys.readouterr().err  # 2 splits x 4 methods
    assert run.main(args) == 0
    assert "0 run now" in capsys.readouterr().err  # every cell stored
    folder = tmp_path / "uci_regression-smoke"
    text = (folder / "report.md").read_text()
    assert "## bostonHousing" in text and "published MC dropout" in text
    assert "## Against the published numbers" in text
    cells = list((tmp_path / ".cells" / "uci_regression-smoke").glob("*/metrics.json"))
    metrics = json.loads(cells[0].read_text())
    assert {"rmse", "ll", "coverage", "pit"} <= set(metrics)


def test_published_table_is_read_from_the_shared_readme():
    readme = SHARED_DATA / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} is absent")
    table = published(readme)
    row = table[(table.dataset == "bostonHousing") & (table.column == "MC dropout") & (table.metric == "LL")]
    assert row.iloc[0]["mean"] == -2.46 and row.iloc[0]["se"] == 0.06


def test_bad_experiment_input_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "recipes" / "bad_uci.toml"
    bad.parent.mkdir()
    bad.write_text('[recipe]\nname = "bad_uci"\ndescription = "x"\n[experiment]\n'
                   'kind = "uci_regression"\ndatasets = ["bostonHousin"]\n')
    assert run.main([str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    if (UCI / "bostonHousing").is_dir():
        assert "unknown data set 'bostonHousin'" in err and "did you mean 'bostonHousing'" in err
    bad.write_text('[recipe]\nname = "bad_uci"\ndescription = "x"\n[experiment]\nkind = "uci"\n')
    assert run.main([str(bad), "--out", str(tmp_path)]) == 2
    assert "unknown kind 'uci'" in capsys.readouterr().err
    assert run.main(["calibration_classification", "--set", "experiment.x=1", "--out",
                     str(tmp_path)]) == 2
    assert "unknown key 'x'" in capsys.readouterr().err
    assert not list(Path(tmp_path).glob("*-smoke"))
