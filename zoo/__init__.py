"""zoo: a probabilistic programming model zoo on Pyro and PyTorch.

    import zoo
    zoo.list_models("eight_schools*")
    fit = zoo.fit("eight_schools_noncentered", zoo.load_dataset("eight_schools"), method="nuts")
    fit.summary()
"""

from .errors import ConvergenceWarning, ZooError
from .fit import Fit
from .inference import fit
from .registry import get_dataset, get_model, list_datasets, list_models, load_dataset

__all__ = ["fit", "Fit", "get_model", "list_models", "get_dataset", "list_datasets",
           "load_dataset", "ZooError", "ConvergenceWarning"]
__version__ = "0.1.0"
