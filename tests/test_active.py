"""Active learning (zoo.bdl.active): BALD is the mutual information, each acquisition function
picks the point it should, and the recipe runs end to end and rejects bad keys."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from zoo import run
from zoo.bdl import active
from zoo.uncertainty import ClassificationPredictive

# Two posterior draws x four pool points, two classes: p_s(y = 1 | x_n).
#   0: both draws say ½: a coin flip the model has learned (aleatoric only)
#   1: the draws disagree (0.99 vs 0.2): epistemic
#   2: both confident and agreeing
#   3: the draws disagree completely (1 vs 0): the most epistemic, but already labelled below
P1 = torch.tensor([[0.5, 0.99, 0.95, 1.0],
                   [0.5, 0.20, 0.95, 0.0]], dtype=torch.float64)
PRED = ClassificationPredictive(torch.stack([1 - P1, P1], -1))


def _h(p: float) -> float:
    """Binary entropy in nats, written out."""
    return -sum(q * math.log(q) for q in (p, 1 - p) if q > 0)


def test_bald_is_predictive_entropy_minus_expected_entropy_by_hand():
    by_hand_total = [_h(float(P1[:, n].mean())) for n in range(4)]
    by_hand_bald = [by_hand_total[n] - (_h(float(P1[0, n])) + _h(float(P1[1, n]))) / 2
                    for n in range(4)]
    assert by_hand_bald[0] == 0.0 and abs(by_hand_bald[3] - math.log(2)) < 1e-15
    bald = active.scores("bald", PRED)
    entropy = active.scores("max_entropy", PRED)
    assert torch.allclose(bald, torch.tensor(by_hand_bald, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.allclose(entropy, torch.tensor(by_hand_total, dtype=torch.float64), atol=1e-12,
                          rtol=0)


def test_acquisition_functions_pick_the_expected_point():
    labelled = torch.tensor([False, False, False, True])  # point 3 is taken already
    # BALD wants the disagreement (1), max entropy the learned coin flip (0), neither the
    # confident point (2) nor a labelled one (3).
    assert active.acquire(active.scores("bald", PRED), labelled, 1).tolist() == [1]
    assert active.acquire(active.scores("max_entropy", PRED), labelled, 1).tolist() == [0]
    assert active.acquire(active.scores("bald", PRED), labelled, 3).tolist() == [1, 0, 2]
    gen = torch.Generator().manual_seed(0)
    picks = [int(active.acquire(active.scores("random", PRED, gen), labelled, 1)) for _ in range(300)]
    counts = torch.bincount(torch.tensor(picks), minlength=4).tolist()
    # Uniform over the three free points: 100 each expected, sd 8.2; 4 sd either side.
    assert counts[3] == 0 and all(67 <= c <= 133 for c in counts[:3]), counts
    with pytest.raises(Exception, match="only 3 are unlabelled"):
        active.acquire(active.scores("bald", PRED), labelled, 4)


def test_task_is_a_coin_flip_right_of_the_line_and_clean_left_of_it():
    x = torch.tensor([[2.9, -2.0], [2.9, 2.0], [-2.0, 2.5], [-2.0, -2.5]], dtype=torch.float64)
    p = active.true_probs(x)
    assert torch.allclose(p[:2], torch.full((2,), 0.5, dtype=torch.float64), atol=1e-3)
    assert p[2] > 0.99 and p[3] < 0.01


def test_once_the_noise_is_learned_bald_looks_elsewhere_and_max_entropy_does_not():
    """A real fit: 150 labels where labels are coin flips (x1 > 1.5), 20 on the clean left. The
    draws agree on p = 1/2 in the noisy region, so BALD's top 10 of a pool half there, half
    on the left are all on the left, while max entropy's are (nearly) all in the noise."""
    config = active.validate(active.DEFAULTS, "test")
    gen = torch.Generator().manual_seed(0)

    def uniform(n: int, lo: float, hi: float) -> torch.Tensor:
        u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
        return torch.stack([lo + (hi - lo) * u[:, 0], -3 + 6 * u[:, 1]], 1)

    x = torch.cat([uniform(150, 1.5, 3.0), uniform(20, -3.0, 0.0)])
    y = (torch.rand(170, generator=gen, dtype=torch.float64) < active.true_probs(x)).long()
    fit = active._fit(config, active.rbf_features(x, 7, 1.0), y, seed=0)
    pool = torch.cat([uniform(100, 1.5, 3.0), uniform(100, -3.0, 0.0)])  # noisy half first
    phi = active.rbf_features(pool, 7, 1.0)
    pred = active.predictive(fit, phi)
    d = fit.draws(["alpha", "beta"])
    assert torch.allclose(pred.probs[..., 1], torch.sigmoid(d["alpha"][:, None] + d["beta"] @ phi.T))
    bald, entropy = active.scores("bald", pred), active.scores("max_entropy", pred)
    free = torch.zeros(200, dtype=torch.bool)
    assert (active.acquire(bald, free, 10) >= 100).all()
    assert (active.acquire(entropy, free, 10) < 100).sum() >= 8
    assert bald[:100].mean() < 0.5 * bald[100:].mean()
    assert entropy[:100].mean() > 0.6  # close to log 2 = 0.693: the model knows it is a coin flip


def _values(**changes) -> dict:
    values = {**active.DEFAULTS, "seeds": 1, "pool_size": 40, "test_size": 50,
              "initial_labels": 4, "acquisition_size": 3, "max_labels": 10, "report_at": [10],
              "model": {"centres_per_axis": 3, "lengthscale": 1.5, "prior_scale": 2.5},
              "laplace": {"num_samples": 40, "adam_steps": 5, "lbfgs_steps": 20}}
    values.update(changes)
    return values


def test_same_seed_gives_the_same_curve():
    config = active.validate(_values(), "test")
    first, extra = active.run_curve(config, 3, "bald")
    again, extra_again = active.run_curve(config, 3, "bald")
    assert first == again and extra["order"] == extra_again["order"]
    assert [r["labels"] for r in first] == [4, 7, 10]
    assert len(set(extra["order"])) == 10  # no point bought twice


def test_smoke_run_writes_the_report(tmp_path):
    assert run.main(["active_learning", "--smoke", "--out", str(tmp_path), "--quiet"]) == 0
    folder = tmp_path / "active_learning-smoke"
    text = (folder / "report.md").read_text()
    assert "Smoke run" in text and "| 12 | BALD |" in text and "Bayes-optimal" in text
    curves = pd.read_csv(folder / "curves.csv")
    assert set(curves.acquisition) == {"bald", "max_entropy", "random"}
    assert set(curves.seed) == {0, 1} and curves.labels.max() == 12
    for figure in ("learning_curves.png", "acquired.png"):
        assert (folder / "figures" / figure).stat().st_size > 1000


@pytest.mark.parametrize("setting, message", [
    ("experiment.acquisiton=['bald']", "unknown key 'acquisiton' (did you mean 'acquisitions'?)"),
    ("experiment.acquisitions=['bald','maxent']", "unknown acquisition 'maxent'"),
    ("experiment.seeds='five'", "experiment.seeds must be int, got 'five'"),
    ("experiment.report_at=[25]", "report_at=[25]: each must be a label count the run reaches"),
    ("experiment.max_labels=205", "max_labels=205 is not initial_labels + a whole number"),
    ("experiment.laplace.num_sample=10", "did you mean 'num_samples'"),
    ("experiment.model.lengthscale=-1.0", "lengthscale"),
    ("results.x=1", "unknown key 'results'"),
])
def test_bad_keys_are_one_line_errors(tmp_path, capsys, setting, message):
    assert run.main(["active_learning", "--set", setting, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "active_learning.toml" in err, err
    assert not list(Path(tmp_path).iterdir())  # nothing written
