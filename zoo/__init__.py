"""zoo: a probabilistic programming model zoo on Pyro and PyTorch.

    import zoo
    zoo.list_models("eight_schools*")
    fit = zoo.fit("eight_schools_noncentered", zoo.load_dataset("eight_schools"), method="nuts")
    fit.summary()
"""

from .compare import compare  # the function; its module stays importable as zoo.compare
from .errors import ConvergenceWarning, ZooError
from .evidence import Evidence, log_evidence
from .fit import Fit
from .inference import fit
from .registry import get_dataset, get_model, list_datasets, list_models, load_dataset

__all__ = ["fit", "Fit", "log_evidence", "Evidence", "compare", "get_model", "list_models", "get_dataset", "list_datasets",
           "load_dataset", "ZooError", "ConvergenceWarning"]
__version__ = "0.1.0"
