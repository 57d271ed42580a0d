"""Simulation-based calibration (zoo.sbc): uniform ranks for exact draws, the tests catch a too
narrow, too wide and shifted posterior, the ECDF band has its nominal false-alarm rate, failed
fits are counted, and the CLI and the catalogue recipe write their reports (bad input: one line)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from zoo import run
from zoo.sbc import DEFAULTS, FitTimeout, sbc
from zoo.sbc_result import _eval_points, ecdf_band, ecdf_pvalue
from zoo.sbc_catalogue import RUN_KEYS
from zoo.sbc_report import load


def scaled_exact(scale: float, shift: float = 0.0):
    """A posterior that is the exact one scaled ``scale``× about its mean and moved ``shift``
    posterior sds: draws from normal_normal's closed form, deliberately wrong."""

    def posterior(data, seed, num_draws):
        torch.manual_seed(seed)
        exact = zoo.get_model("normal_normal").exact_posterior(**data)["mu"]
        draws = exact.sample((num_draws,))
        return {"mu": exact.mean + scale * (draws - exact.mean) + shift * exact.stddev}

    posterior.__name__ = f"exact_x{scale}_shift{shift}"
    return posterior


@pytest.mark.parametrize("model", ["normal_normal", "beta_binomial", "linear_regression"])
def test_exact_posterior_draws_give_uniform_ranks(model):
    # Draws from the closed form are a perfect sampler: every test must pass (family-wise
    # false-alarm rate 0.01, fixed seed). linear_regression ranks beta[0..2] and sigma2 from the
    # NIG marginals (Student-t and inverse gamma), so it also checks those closed forms.
    result = sbc(model, "exact", num_simulations=200, seed=0)
    assert result.num_failed == 0 and result.ranks.notna().all().all()
    assert result.verdict == "pass", result.tests
    assert result.ranks.to_numpy().min() >= 0 and result.ranks.to_numpy().max() <= 32


def test_too_narrow_too_wide_and_shifted_posteriors_fail():
    # N = 400 simulations give the width test power ~0.99 against a posterior 20% too narrow
    # (ranks pile up at both ends) and the mean test ~0.99 against a shift of 0.3 posterior sds,
    # at level 0.01/4 (power computed by simulation; see the report). The calibrated draws on
    # the same simulated data sets pass.
    cases = {(1.0, 0.0): "ok", (0.8, 0.0): "too narrow", (1.25, 0.0): "too wide",
             (1.0, 0.3): "biased high", (1.0, -0.3): "biased low"}
    for (scale, shift), reading in cases.items():
        result = sbc("normal_normal", scaled_exact(scale, shift), num_simulations=400, seed=1)
        row = result.tests.iloc[0]
        assert row["reading"] == reading, (scale, shift, result.tests)
        assert result.verdict == ("pass" if reading == "ok" else "FAIL"), result.tests


def test_ecdf_band_has_its_nominal_false_alarm_rate():
    # 4000 sets of uniform ranks: the fraction whose ECDF leaves the simultaneous 95% band must
    # be 0.05 within 4 binomial standard errors (0.014) (discreteness makes the exact level a
    # little below 0.05). A pointwise 95% band, uncorrected, would be left ~30-40% of the time.
    rng = np.random.default_rng(0)
    for num_ranks, num_draws in [(100, 64), (50, 19)]:
        z, lower, upper = ecdf_band(num_ranks, num_draws, 0.05)
        ranks = rng.integers(0, num_draws + 1, size=(4000, num_ranks))
        points = _eval_points(num_ranks, num_draws)
        ecdf = (ranks[:, None, :] < points[None, :, None]).mean(-1)
        outside = ((ecdf < lower - 1e-12) | (ecdf > upper + 1e-12)).any(1)
        assert abs(outside.mean() - 0.05) < 4 * np.sqrt(0.05 * 0.95 / 4000), outside.mean()
        # the exact p-value agrees with the band: p <= 0.05 exactly when the ECDF leaves it
        for r, out in zip(ranks[:200], outside[:200]):
            assert (ecdf_pvalue(r, num_draws) <= 0.05) == out
    # ranks as far from uniform as they get: a p-value of 0, not the round-off of 1 - 1 (-1e-15)
    assert ecdf_pvalue(np.zeros(20), 32) == 0.0


def flaky(fails):
    """The exact posterior, except that the calls numbered in ``fails`` raise."""
    calls = []

    def posterior(data, seed, num_draws):
        calls.append(seed)
        if fails(len(calls)):
            raise RuntimeError("the sampler blew up")
        return scaled_exact(1.0)(data, seed, num_draws)

    return posterior


def test_the_log_likelihood_is_ranked_and_alone_catches_a_wrong_width():
    # log p(y | θ) at the truth, ranked among its values at the draws (Modrák et al. 2023):
    # uniform for the exact posterior; for one too narrow the draws crowd the likelihood's
    # peak, so the truth's value ranks low (too wide: high). parameters=False ranks it alone
    # (for models whose parameters are not identified); N = 200 detects a width off by 2x.
    cases = {1.0: "pass", 0.5: "FAIL", 2.0: "FAIL"}
    for scale, verdict in cases.items():
        result = sbc("normal_normal", scaled_exact(scale), num_simulations=200, seed=2,
                     parameters=False)
        assert list(result.ranks.columns) == ["log_likelihood"]
        assert result.verdict == verdict, (scale, result.tests)
        if scale != 1.0:
            z = result.tests.iloc[0]["mean_z"]
            assert (z < 0) if scale < 1 else (z > 0), (scale, result.tests)
    # "exact" draws each marginal on its own (NIG: beta independent of sigma2), so the joint
    # quantity is ranked but not tested for it (polynomial_d3's fails at p ~ 1e-39 if it is).
    exact = sbc("polynomial_d3", "exact", num_simulations=30, seed=0)
    assert "log_likelihood" in exact.ranks and "log_likelihood" not in set(exact.tests["param"])
    assert exact.level == exact.alpha / (4 * (exact.ranks.shape[1] - 1))


def test_a_failed_fit_is_counted_not_dropped():
    once = sbc("normal_normal", flaky(lambda i: i == 5), num_simulations=30, seed=0)
    assert once.num_failed == 1 and once.ranks["mu"].isna().sum() == 1
    assert once.simulations.loc[4, "error"] == "RuntimeError: the sampler blew up"
    assert once.verdict == "pass"  # 1 of 30 is under the 10% that fails a verdict
    # Every third fit fails: past 3 failures (10% of 30) the verdict is settled and the rest
    # are skipped, visibly.
    often = sbc("normal_normal", flaky(lambda i: i % 3 == 0), num_simulations=30, seed=0)
    assert often.num_failed == 4 and often.num_skipped == 18
    assert often.ranks["mu"].isna().sum() == 22
    assert often.verdict == "FAIL (4 of 30 fits failed; stopped after 12)"


def test_a_fit_over_the_cpu_limit_fails_as_a_timeout():
    def spin(data, seed, num_draws):
        while True:
            sum(range(1000))

    result = sbc("normal_normal", spin, num_simulations=5, seed=0, fit_timeout=0.05)
    assert list(result.simulations["status"]) == ["timeout"] + ["skipped"] * 4
    assert result.verdict.startswith("inconclusive (1 of 5 fits failed, most over the CPU limit")
    # TorchScript turns an exception raised in a signal handler (FitTimeout, from SIGPROF) into
    # a RuntimeError: a fit that failed with its CPU limit spent is still a timeout.
    def spin_in_torchscript(data, seed, num_draws):
        try:
            spin(data, seed, num_draws)
        except FitTimeout as e:
            raise RuntimeError(f"The following operation failed in the TorchScript "
                               f"interpreter: {e}") from None

    result = sbc("normal_normal", spin_in_torchscript, num_simulations=5, seed=0,
                 fit_timeout=0.05)
    assert list(result.simulations["status"]) == ["timeout"] + ["skipped"] * 4


def test_a_fit_interrupted_inside_a_plate_leaves_no_plate_behind():
    # FitTimeout comes from a signal handler, so it can land after a plate has pushed itself
    # on Pyro's global stack but before its `with` block owns it: nothing pops it, and every
    # later fit failed with 'at plates "innovations" and "time", collide at dim=-1' (local_level
    # NUTS in the catalogue). Here the first fit leaves a plate entered, as that race does.
    import pyro
    from pyro.poutine.runtime import _DIM_ALLOCATOR, _PYRO_STACK

    calls = []

    def interrupted_then_plated(data, seed, num_draws):
        calls.append(seed)
        if len(calls) == 1:
            pyro.plate("innovations", 3, dim=-1).__enter__()
            raise FitTimeout("over the limit")
        with pyro.plate("time", 2, dim=-1):  # collides with a stale plate at dim -1
            pass
        return scaled_exact(1.0)(data, seed, num_draws)

    result = sbc("normal_normal", interrupted_then_plated, num_simulations=20, seed=0)
    assert list(result.simulations["status"]) == ["error"] + ["ok"] * 19, result.simulations
    assert not _PYRO_STACK and not any(_DIM_ALLOCATOR._stack)


def test_the_cpu_budget_stops_a_run_and_the_verdict_says_so():
    exact = scaled_exact(1.0)

    def slow(data, seed, num_draws):  # ~10 ms of CPU per fit
        end = time.process_time() + 0.01
        while time.process_time() < end:
            pass
        return exact(data, seed, num_draws)

    result = sbc("normal_normal", slow, num_simulations=200, seed=0, max_cpu=0.5)
    status = list(result.simulations["status"])
    ran = status.count("ok")
    assert 10 < ran < 200 and status == ["ok"] * ran + ["budget"] * (200 - ran)
    assert result.ranks["mu"].notna().sum() == ran
    # how many fit in the budget depends on the machine, so only the wording is asserted
    assert result.verdict.endswith(f"(CPU budget: {ran} of 200 run)"), result.verdict


def test_same_seed_same_ranks_and_save_load_round_trip(tmp_path):
    a = sbc("beta_binomial", "exact", num_simulations=20, seed=3)
    b = sbc("beta_binomial", "exact", num_simulations=20, seed=3)
    pd.testing.assert_frame_equal(a.ranks, b.ranks)
    from zoo.sbc_report import save

    save(a, tmp_path)
    back = load(tmp_path)
    pd.testing.assert_frame_equal(back.ranks, a.ranks)
    assert back.verdict == a.verdict and back.settings == a.settings


def test_cli_writes_the_folder_with_a_real_method(tmp_path, capsys):
    # Laplace on normal_normal is exact (a Gaussian posterior), so its ranks are uniform.
    args = ["sbc", "--model", "normal_normal", "--method", "laplace", "--simulations", "12",
            "--out", str(tmp_path), "--set", "adam_steps=100", "--set", "num_draws=16",
            "--set", "dataset_args.n=5", "--quiet"]
    assert run.main(args) == 0
    folder = tmp_path / "sbc" / "normal_normal-laplace"
    for name in ("report.md", "ranks.csv", "simulations.csv", "tests.csv", "ranks.png", "ecdf.png"):
        assert (folder / name).is_file(), name
    text = (folder / "report.md").read_text()
    assert "**Verdict: pass**" in text and "approximate method" in text and "adam_steps=100" in text
    sims = pd.read_csv(folder / "simulations.csv")
    assert len(sims) == 12 and sims["status"].eq("ok").all() and sims["converged"].all()
    assert "normal_normal / laplace: pass" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--model", "normal_norml", "--method", "chees"], "did you mean 'normal_normal'"),
    (["--model", "normal_normal", "--method", "nut"], "did you mean 'nuts'"),
    (["--model", "eight_schools_centered", "--method", "laplace"],
     "does not support method 'laplace'"),
    (["--model", "logistic_regression", "--method", "exact"], "has no exact posterior"),
    (["--model", "normal_normal", "--method", "chees", "--set", "num_warmp=10"],
     "did you mean 'num_warmup'"),
    (["--model", "normal_normal", "--method", "chees", "--set", "num_chains=8"],
     "fewer than num_draws = 32"),
])
def test_cli_bad_input_is_a_one_line_error(tmp_path, capsys, args, message):
    assert run.main(["sbc", *args, "--out", str(tmp_path), "--simulations", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "sbc").exists()


def test_recipe_smoke_runs_cells_and_writes_the_summary(tmp_path, capsys):
    args = ["sbc_catalogue", "--smoke", "--executor", "serial", "--out", str(tmp_path), "--quiet"]
    assert run.main(args) == 0
    assert "5 run now" in capsys.readouterr().err  # normal_normal x 4 methods and exact
    folder = tmp_path / "sbc-smoke"
    text = (folder / "report.md").read_text()
    for method in ("chees", "nuts", "svi", "laplace", "exact"):
        assert f"[normal_normal-{method}](normal_normal-{method}/report.md)" in text, method
        assert (folder / f"normal_normal-{method}" / "ranks.csv").is_file()
    assert len(list((tmp_path / ".cells" / "sbc_catalogue-smoke").glob("*/result.json"))) == 5
    # a seed-1 folder an earlier run wrote for a FAIL that now passes is stale and goes; a
    # folder of the sbc command stays
    for name, command in (("normal_normal-nuts-seed1", "sbc_catalogue --smoke"),
                          ("mine", "sbc --model normal_normal --method nuts")):
        (folder / name).mkdir()
        (folder / name / "report.md").write_text(f"Written by `python -m zoo.run {command}`.")
    assert run.main(args) == 0
    assert "0 run now" in capsys.readouterr().err  # resumed: every cell stored
    assert not (folder / "normal_normal-nuts-seed1").exists() and (folder / "mine").is_dir()


def test_recipe_validates_every_model_and_matches_the_cli_defaults(capsys):
    assert run.main(["sbc_catalogue", "--check"]) == 0
    out = capsys.readouterr().out
    assert "ok: recipe is valid" in out and "hierarchical_linear / nuts" in out
    import tomllib
    from zoo.recipe import find_recipe

    raw = tomllib.loads(find_recipe("sbc_catalogue").read_text())
    for method in ("chees", "nuts", "svi", "laplace"):  # the CLI and the catalogue agree
        settings = {k: v for k, v in raw["sbc"][method].items() if k not in RUN_KEYS}
        assert settings == DEFAULTS[method], method


def test_recipe_layers_run_keys_and_settings_from_general_to_specific(tmp_path):
    # [sbc] < [sbc.METHOD] < [sbc.model.NAME] < [sbc.model.NAME.METHOD]: the catalogue gives
    # one model × method its own budget, timeout and sampler settings (radon_uranium's NUTS)
    from zoo.sbc_catalogue import make_cells

    raw = {"recipe": {"name": "layers"},
           "sbc": {"models": ["normal_normal", "beta_binomial"], "methods": ["nuts", "svi"],
                   "max_cpu": 10.0, "fit_timeout": 5.0,
                   "nuts": {"max_cpu": 20.0, "num_warmup": 50},
                   "model": {"normal_normal": {"max_cpu": 30.0,
                                               "nuts": {"fit_timeout": 60.0,
                                                        "dense_mass": True}}}}}
    cells, _ = make_cells(tmp_path / "layers.toml", raw, False, 0, tmp_path)
    got = {(c.model, c.method): (c.max_cpu, c.fit_timeout, dict(c.settings)) for c in cells}
    assert got[("beta_binomial", "svi")][:2] == (10.0, 5.0)
    assert got[("beta_binomial", "nuts")][:2] == (20.0, 5.0)
    assert got[("normal_normal", "svi")][:2] == (30.0, 5.0)
    max_cpu, fit_timeout, settings = got[("normal_normal", "nuts")]
    assert (max_cpu, fit_timeout) == (30.0, 60.0)
    assert settings["dense_mass"] is True and settings["num_warmup"] == 50
    assert "dense_mass" not in got[("beta_binomial", "nuts")][2]


def test_bad_recipe_input_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad_sbc.toml"
    head = '[recipe]\nname = "bad_sbc"\n[sbc]\n'
    for body, message in [('models = ["normal_normal"]\nnum_simulation = 5\n',
                           "did you mean 'num_simulations'"),
                          ('models = "nothing_like_this*"\n', "matches no registered model"),
                          ('models = ["normal_normal"]\n[sbc.nuts]\nnum_warmup = -1\n',
                           "num_warmup must be >= 0"),
                          ('[sbc.model.bnn_mlp]\ndataset_args = {m = 3}\n', "unknown key 'm'")]:
        bad.write_text(head + body)
        assert run.main([str(bad), "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "bad_sbc.toml" in err, err
    assert not (tmp_path / "sbc").exists()


@pytest.mark.slow
def test_mean_field_svi_is_flagged_as_an_approximate_method():
    # polynomial_d3's coefficients are strongly correlated a posteriori (x in (-1, 1): x and
    # x^3 nearly collinear), and a mean-field Normal guide underestimates each marginal
    # variance by the factor 1 - R^2 of its regression on the others: ranks pile up at both
    # ends. 30 simulations give width z-statistics of 5-8 (measured: 7-11 at N = 50), far past
    # the Bonferroni level; the verdict names the method approximate instead of FAIL.
    result = sbc("polynomial_d3", "svi", num_simulations=30, seed=0, num_steps=300)
    assert result.verdict == "miscalibrated (approximate method)", result.tests
    coefficients = result.tests[result.tests["param"].str.startswith("beta")]
    assert (coefficients["reading"].str.contains("too narrow")).sum() >= 3, result.tests


def test_an_exact_methods_fail_stands_only_if_fresh_simulations_fail_too():
    from types import SimpleNamespace as R

    from zoo.sbc_catalogue import final_verdicts

    rows = [("a-nuts", R(seed=0, verdict="FAIL")), ("a-nuts-seed1", R(seed=1, verdict="FAIL")),
            ("b-exact", R(seed=0, verdict="FAIL")), ("b-exact-seed1", R(seed=1, verdict="pass")),
            ("c-svi", R(seed=0, verdict="miscalibrated (approximate method)"))]
    a, a1, b, b1, c = final_verdicts(rows)
    assert a.startswith("FAIL (confirmed on fresh simulations, seed 1") and a1 is None
    assert b == "pass (seed 0: FAIL; fresh simulations, seed 1: pass)" and b1 is None
    assert c == "miscalibrated (approximate method)"


def test_a_fail_whose_fits_did_not_converge_says_so():
    # Too-narrow ranks (all 0) from an exact method: FAIL either way, and when most ranked fits
    # failed their convergence checks the verdict says that is why (settings too short).
    import pandas as pd

    from zoo.sbc_result import SBCResult

    def result(converged: list[bool]) -> SBCResult:
        n = len(converged)
        sims = pd.DataFrame({"status": ["ok"] * n, "converged": converged})
        return SBCResult("m", "nuts", 8, 0, pd.DataFrame({"mu": [0.0] * n}), sims, {}, "d")

    assert result([True] * 20).verdict == "FAIL"
    assert result([False] * 11 + [True] * 9).verdict == \
        "FAIL (11 of 20 ranked fits not converged)"
