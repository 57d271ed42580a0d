"""zoo.calibration: known values on tiny hand examples, and large-sample behaviour on data that
is calibrated (or mis-calibrated) by construction. Every random test is seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo import calibration as cal
from zoo.errors import ZooError
from zoo.uncertainty import RegressionPredictive

# --------------------------------------------------------------------------------------------
# Classification: hand examples
# --------------------------------------------------------------------------------------------

# Two points at confidence 0.9 (one right) and two at 0.6 (both wrong): the 0.9 bin has gap
# |0.5 − 0.9| = 0.4, the 0.6 bin |0 − 0.6| = 0.6, each holds half the points.
OVERCONFIDENT = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]], dtype=torch.float64)
OVERCONFIDENT_Y = torch.tensor([0, 1, 1, 0])


def test_ece_and_mce_of_an_overconfident_predictor_by_hand():
    assert cal.ece(OVERCONFIDENT, OVERCONFIDENT_Y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.6)
    assert cal.mce(OVERCONFIDENT, OVERCONFIDENT_Y) == pytest.approx(0.6)
    # With one bin the gaps cancel partly: |mean acc − mean conf| = |0.25 − 0.75| = 0.5.
    assert cal.ece(OVERCONFIDENT, OVERCONFIDENT_Y, bins=1) == pytest.approx(0.5)


def test_reliability_table_by_hand():
    table = cal.reliability(OVERCONFIDENT, OVERCONFIDENT_Y, bins=5)
    assert list(table.columns) == ["lower", "upper", "confidence", "accuracy", "count"]
    assert table["count"].tolist() == [0, 0, 2, 0, 2]  # 0.6 lies in (0.4, 0.6], 0.9 in (0.8, 1]
    np.testing.assert_allclose(table["lower"], [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(table["upper"], [0.2, 0.4, 0.6, 0.8, 1.0])
    row = table.iloc[4]
    assert (row.confidence, row.accuracy) == pytest.approx((0.9, 0.5))
    assert table["accuracy"].isna().tolist() == [True, True, False, True, False]


def test_brier_and_nll_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    # (0.3² + 0.2² + 0.1²) = 0.14 and (0.2² + 0.5² + 0.7²) = 0.78
    assert cal.brier(probs, y) == pytest.approx((0.14 + 0.78) / 2)
    assert cal.nll(probs, y) == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2)
    s = cal.summary(probs, y)
    assert set(s) == {"accuracy", "nll", "brier", "ece", "mce"}
    assert s["accuracy"] == 0.5 and s["brier"] == pytest.approx(0.46)
    # A perfect, certain predictor scores 0 on both.
    eye = torch.eye(3, dtype=torch.float64)
    assert cal.brier(eye, torch.arange(3)) == 0 and cal.nll(eye, torch.arange(3)) == 0


def test_bad_classification_inputs_are_named():
    with pytest.raises(ZooError, match=r"\(N, K\)"):
        cal.ece(torch.ones(3), torch.zeros(3))
    with pytest.raises(ZooError, match="out of range 0..1"):
        cal.nll(OVERCONFIDENT, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ZooError, match="not logits"):
        cal.brier(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))
    with pytest.raises(ZooError, match="bins"):
        cal.ece(OVERCONFIDENT, OVERCONFIDENT_Y, bins=0)
    with pytest.raises(ZooError, match="T > 0"):
        cal.apply_temperature(torch.zeros(2, 3), 0.0)


# --------------------------------------------------------------------------------------------
# Classification: large samples
# --------------------------------------------------------------------------------------------


def _calibrated(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities whose top class has confidence c ~ U(0.4, 1), the others (1 − c)/(k − 1),
    and labels drawn from exactly those probabilities: calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    c = 0.4 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    top = torch.randint(k, (n,), generator=g)
    probs = ((1 - c) / (k - 1))[:, None].expand(n, k).clone()
    probs[torch.arange(n), top] = c
    y = torch.multinomial(probs, 1, generator=g).squeeze(1)
    return probs, y


def test_ece_vanishes_for_calibrated_predictions():
    # 10^5 points over the 9 of 15 bins that cover (0.4, 1]: ~11,000 points a bin, where
    # acc(b) − conf(b) has mean 0 and sd ≤ 0.5/√11,000 ≈ 0.005, so E|gap| ≤ 0.8·0.005 = 0.004
    # and ECE (a weighted mean of the |gap|s) is 0.003 ± 0.001 over seeds. 0.01 is > 5 sds; a
    # mis-calibration of 0.01 or more in every bin would fail it.
    probs, y = _calibrated(100_000, 3, seed=0)
    assert cal.ece(probs, y) < 0.01
    assert cal.mce(probs, y) < 0.03  # the worst of 9 bins: still < 6 sds of one bin's gap
    # The same confidences made over-confident by 0.1 are caught.
    conf, pred = probs.max(1)
    worse = torch.where(torch.rand(len(y), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.float64) < 0.1 / conf, (pred + 1) % 3, y)
    assert cal.ece(probs, worse) == pytest.approx(0.1, abs=0.01)


def _true_logits(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = 1.5 * torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g).squeeze(1)
    return z, y


def test_temperature_scaling_undoes_overconfidence():
    z_val, y_val = _true_logits(20_000, 5, seed=2)
    z_test, y_test = _true_logits(20_000, 5, seed=3)
    # Logits 5 × the true ones: softmax(5z / T) is the true distribution at T = 5, so the
    # validation-NLL minimiser is 5 up to sampling error (a few % at 20,000 points).
    t = cal.fit_temperature(5 * z_val, y_val)
    assert t == pytest.approx(5.0, rel=0.10)
    for z, y in ((z_val, y_val), (z_test, y_test)):
        before = cal.nll(torch.softmax(5 * z, -1), y)
        after = cal.nll(cal.apply_temperature(5 * z, t), y)
        assert after < before
    # ... and the scaled test predictions are calibrated again.
    assert cal.ece(cal.apply_temperature(5 * z_test, t), y_test) < 0.02
    assert cal.ece(torch.softmax(5 * z_test, -1), y_test) > 0.1


def test_temperature_of_a_calibrated_model_is_one():
    z, y = _true_logits(20_000, 5, seed=4)
    assert cal.fit_temperature(z, y) == pytest.approx(1.0, rel=0.05)
    torch.testing.assert_close(cal.apply_temperature(z, 1.0), torch.softmax(z, -1))


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


def _well_specified(n: int, s: int, seed: int) -> tuple[RegressionPredictive, torch.Tensor]:
    """A mixture predictive and y drawn from that very mixture (a random component, then its
    Gaussian): every interval covers its nominal level in expectation."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(s, n, generator=g, dtype=torch.float64)
    var = 0.2 + torch.rand(s, n, generator=g, dtype=torch.float64)
    component = torch.randint(s, (n,), generator=g)
    rows = torch.arange(n)
    y = mean[component, rows] + var[component, rows].sqrt() * torch.randn(
        n, generator=g, dtype=torch.float64)
    return RegressionPredictive(mean, var), y


def _halved(pred: RegressionPredictive) -> RegressionPredictive:
    """The mixture of m + (Y − m)/2 with m its mean: half the spread, over-confident."""
    m = pred.predictive_mean
    return RegressionPredictive(m + (pred.mean - m) / 2, pred.var / 4)


def test_coverage_of_a_well_specified_predictive_is_nominal():
    n = 10_000
    pred, y = _well_specified(n, 8, seed=5)
    got = cal.coverage(pred, y)
    assert set(got) == {0.5, 0.9, 0.95}
    for level, fraction in got.items():
        # the count inside is Binomial(n, level): 4 sds, false alarm ~6e-5 per level
        assert abs(fraction - level) < 4 * math.sqrt(level * (1 - level) / n), (level, fraction)
    # The same mixture shrunk to half its spread about its mean under-covers, visibly.
    assert cal.coverage(_halved(pred), y, levels=(0.9,))[0.9] < 0.75


def test_pit_is_uniform_for_a_well_specified_predictive():
    n, bins = 20_000, 10
    pred, y = _well_specified(n, 10, seed=6)
    u = cal.pit(pred, y)
    assert u.shape == (n,) and ((u >= 0) & (u <= 1)).all()
    counts, edges = cal.pit_histogram(u, bins)
    np.testing.assert_allclose(edges, np.linspace(0, 1, bins + 1))
    assert counts.sum() == n
    # each count is Binomial(n, 1/bins): within 4 sds
    assert np.all(np.abs(counts - n / bins) < 4 * math.sqrt(n * 0.1 * 0.9)), counts
    # An over-confident predictive piles PIT values at both ends (a U shape).
    counts, _ = cal.pit_histogram(cal.pit(_halved(pred), y), bins)
    assert counts[0] > 1.5 * n / bins and counts[-1] > 1.5 * n / bins


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def test_figures_write_png_files(tmp_path):
    probs, y = _calibrated(2_000, 3, seed=7)
    tables = {"calibrated": cal.reliability(probs, y), "hand": cal.reliability(OVERCONFIDENT,
                                                                                OVERCONFIDENT_Y)}
    pred, yr = _well_specified(500, 5, seed=8)
    written = [
        cal.reliability_diagram(tables, tmp_path / "reliability.png"),
        cal.pit_figure({"model": cal.pit(pred, yr), "uniform": np.linspace(0, 1, 100)},
                       tmp_path / "sub" / "pit.png"),
    ]
    for path in written:
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
