"""The data catalogue: importing this package registers every data set.

``zoo.registry.list_datasets()`` lists them; ``zoo.registry.load_dataset(name, **args)`` loads
one as a dict keyed by model argument. posteriordb's reference draws come from
``posteriordb_reference``; the UCI regression splits from ``load_uci``.
"""

from . import (eight_schools, glm, gp, mixture, multilevel, posteriordb, synthetic,  # noqa: F401
               timeseries, uci)  # (importing registers the data sets)
from .posteriordb import list_posteriors, load_posteriordb, posteriordb_reference, posteriordb_root
from .synthetic import synthetic_truth
from .uci import list_uci, load_uci, uci_root

__all__ = [
    "list_posteriors",
    "list_uci",
    "load_posteriordb",
    "load_uci",
    "posteriordb_reference",
    "posteriordb_root",
    "synthetic_truth",
    "uci_root",
]
