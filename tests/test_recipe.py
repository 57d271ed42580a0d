"""Recipes: every shipped recipe validates, --set works, and each broken recipe in
tests/bad_recipes/ fails with a one-line ZooError that names the file and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.datasets import list_posteriors
from zoo.errors import ZooError
from zoo.recipe import check_data, list_recipes, load_recipe, parse_override
from zoo.grid import expand
from zoo.run import RECIPE_TABLES, describe

ROOT = Path(__file__).resolve().parent.parent
# Model-fit recipes; the others (experiments, SBC, teaching) have tests of their own.
RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.toml")
                 if not any(f"[{t}]" in p.read_text() for t in RECIPE_TABLES))
BAD_DIR = Path(__file__).resolve().parent / "bad_recipes"

# file stem -> substrings its error message must contain (besides the file's own name).
BAD = {
    "unknown_top_key": ["unknown key 'outputs'", "allowed: recipe, data, models"],
    "unknown_nuts_key": ["inference.nuts", "'num_warmups'", "did you mean 'num_warmup'"],
    "unknown_model": ["unknown model 'eight_schools_centred'", "did you mean 'eight_schools_centered'"],
    "unknown_method": ["unknown method 'nutz'", "did you mean 'nuts'"],
    "unknown_dataset": ["unknown dataset 'eight_school'", "did you mean 'eight_schools'"],
    "wrong_type": ["inference.num_samples must be int", "'many'"],
    "negative_num_samples": ["inference.num_samples must be > 0", "-5"],
    "missing_data": ["missing [data]"],
    "name_mismatch": ["name 'something_else' must equal", "'name_mismatch'"],
    "unknown_model_arg": ["no argument 'prior_alpha'", "did you mean 'prior_a'"],
    "unknown_dataset_arg": ["no argument 'rows'", "allowed: n, d, seed, noise"],
    "bad_data_shape": ["data['x'] has shape (30,)", "expects (N, D)"],
    "invalid_toml": ["invalid TOML"],
    "bad_svi_choice": ["inference.svi.guide", "'gaussian'", "allowed:"],
}


def _check(path) -> None:
    """What --check does: validate the recipe, then the data against every model."""
    check_data(load_recipe(path))


def test_shipped_recipes_exist():
    assert {p.stem for p in RECIPES} >= {
        "eight_schools", "linear_regression", "polynomial_degree", "eight_schools_posteriordb"}


def _needs_posteriordb(path: Path) -> bool:
    return 'dataset = "posteriordb"' in path.read_text()


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_validates(path):
    recipe = load_recipe(path)
    if _needs_posteriordb(path) and not list_posteriors():
        pytest.skip("no local posteriordb copy (../shared/data/posteriordb or $ZOO_POSTERIORDB)")
    check_data(recipe)
    assert recipe.name == path.stem and recipe.description
    assert f"{len(recipe.runs)} fits" in describe(expand(path))
    smoke = load_recipe(path, smoke=True)  # every shipped recipe has tiny settings too
    for method in smoke.methods:
        # Bridge sampling needs 400 draws per chain (two halves of 200): the one exception.
        bridge = method == "nuts" and smoke.evidence and "bridge" in smoke.evidence["estimators"]
        assert smoke.resolved[method]["num_samples"] <= (400 if bridge else 100)


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_first_line_is_the_command(path):
    assert path.read_text().splitlines()[0] == f"# python -m zoo.run {path.stem}"


def test_recipes_found_by_name():
    assert set(list_recipes()) >= {p.stem for p in RECIPES}
    assert load_recipe("eight_schools").path.resolve() == (ROOT / "recipes" / "eight_schools.toml").resolve()


def test_unknown_recipe_name_did_you_mean():
    with pytest.raises(ZooError, match="did you mean 'eight_schools'"):
        load_recipe("eight_school")


def test_settings_layering():
    r = load_recipe("linear_regression")
    # [inference].num_samples applies to every method that has the key
    assert {r.resolved[m]["num_samples"] for m in ("nuts", "svi", "laplace")} == {1000}
    assert r.settings["nuts"]["num_chains"] == 4 and "num_chains" not in r.settings["svi"]
    s = load_recipe("linear_regression", smoke=True)
    assert s.smoke and s.resolved["nuts"]["num_warmup"] == 50 and s.resolved["svi"]["num_steps"] == 200
    assert s.resolved["svi"]["guide"] == r.resolved["svi"]["guide"]  # unchanged keys carry over


def test_set_overrides():
    r = load_recipe("eight_schools", overrides=[
        "inference.num_samples=200", "inference.chees.num_chains=32", "inference.chees.jit=false",
        "recipe.seed=7", "models=['eight_schools_noncentered']"])
    assert r.resolved["chees"]["num_samples"] == 200
    assert r.resolved["chees"]["num_chains"] == 32 and r.resolved["chees"]["jit"] is False
    assert r.seed == 7 and [m.name for m in r.models] == ["eight_schools_noncentered"]
    assert load_recipe("eight_schools", seed=3).seed == 3  # --seed
    r = load_recipe("linear_regression", overrides=["inference.methods=['mcmc', 'laplace']"])
    assert r.methods == ["chees", "laplace"]  # "mcmc" is the many-chain sampler


def test_set_values_are_toml_literals():
    assert parse_override("inference.nuts.target_accept=0.9") == (["inference", "nuts", "target_accept"], 0.9)
    assert parse_override("inference.methods=[\"svi\"]")[1] == ["svi"]
    assert parse_override("data.dataset=coin_flips")[1] == "coin_flips"  # bare word: a string


@pytest.mark.parametrize("override, expected", [
    ("inference.nmu_samples=3",
     ["--set inference.nmu_samples=3", "'nmu_samples'", "did you mean 'num_samples'"]),
    ("inference.nuts.num_warmupp=3", ["--set inference.nuts.num_warmupp=3", "did you mean 'num_warmup'"]),
    ("colour.x=1", ["unknown key 'colour'"]),
    ("recipe.sed=1", ["unknown key 'sed'", "did you mean 'seed'"]),
    ("inference.num_samples=-1", ["--set", "must be > 0"]),
    ("inference.num_samples", ["expected KEY=VALUE"]),
    ("models.0.name=x", ["replace the list"]),
    ("models=['eight_schools_centred']", ["--set models=", "did you mean 'eight_schools_centered'"]),
])
def test_set_bad_key_fails(override, expected):
    with pytest.raises(ZooError) as e:
        load_recipe("eight_schools", overrides=[override])
    msg = str(e.value)
    assert "\n" not in msg
    for part in expected:
        assert part in msg


def test_bad_corpus_is_complete():
    assert {p.stem for p in BAD_DIR.glob("*.toml")} == set(BAD)


@pytest.mark.parametrize("stem", sorted(BAD))
def test_bad_recipe_fails_with_one_line(stem):
    with pytest.raises(ZooError) as e:
        _check(BAD_DIR / f"{stem}.toml")
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert f"{stem}.toml" in msg, msg  # names the file
    for part in BAD[stem]:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_smoke_needs_a_smoke_table(tmp_path):
    text = (BAD_DIR / "unknown_method.toml").read_text().replace('"nutz"', '"nuts"')
    path = tmp_path / "unknown_method.toml"
    path.write_text(text)
    load_recipe(path)  # valid without --smoke
    with pytest.raises(ZooError, match=r"--smoke needs a \[smoke\] table"):
        load_recipe(path, smoke=True)


@pytest.mark.parametrize("override, expected", [
    ("evidence.estimators=['brige']", ["evidence", "unknown estimator 'brige'", "did you mean 'bridge'"]),
    ("evidence.estimators=[]", ["at least one estimator"]),
    ("evidence.bridge_proposal='warp2'", ["bridge_proposal", "did you mean 'warp3'"]),
    ("evidence.prior={beta_30_30=0.5, beta_1_1=0.6}", ["sum to 1", "1.1"]),
    ("evidence.prior={beta_30_30=1.5, beta_1_1=-0.5}", ["positive", "-0.5"]),
    ("evidence.prior={beta_30_30=1.0}", ["missing beta_1_1"]),
    ("evidence.prior={beta_30=0.5, beta_1_1=0.5}", ["'beta_30'", "did you mean 'beta_30_30'"]),
    ("evidence.prio=1", ["unknown key 'prio'", "did you mean 'prior'"]),
    ("models=[{name='beta_binomial'}, {name='beta_binomial', args={prior_a=2.0}}]",
     ["model 'beta_binomial' is listed twice", "distinct label"]),
    ("models=[{name='beta_binomial', label='a'}, {name='beta_binomial', label='a'}]",
     ["label 'a' is listed twice"]),
])
def test_bad_evidence_and_labels(override, expected):
    with pytest.raises(ZooError) as err:
        load_recipe("beta_binomial_bayes_factor", overrides=[override])
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


def test_labels_and_evidence_table():
    r = load_recipe("beta_binomial_bayes_factor")
    assert [m.label for m in r.models] == ["beta_30_30", "beta_1_1"]
    assert [m.name for m in r.models] == ["beta_binomial"] * 2
    assert r.runs[0] == ("beta_30_30", "nuts")
    assert r.evidence == {"estimators": ["exact", "laplace", "importance", "bridge"], "prior": None,
                          "bridge_proposal": "normal"}
    assert load_recipe("eight_schools").evidence is None  # optional
    assert load_recipe("eight_schools").models[0].label == "eight_schools_centered"  # default
