"""The model catalogue: importing this package registers every model (one module per family).

``zoo.registry.list_models()`` lists them; ``zoo.registry.get_model(name)`` returns a spec.
"""

from . import (arm, conjugate, glm, gp, hierarchical, hmm, mixture, networks,  # noqa: F401
               regression, timeseries)  # (importing registers the models)
from .bounds import bounded
from .conjugate import NIGPosterior, nig_log_evidence, nig_marginals, nig_posterior
from .regression import polynomial_features

__all__ = [
    "NIGPosterior",
    "bounded",
    "nig_log_evidence",
    "nig_marginals",
    "nig_posterior",
    "polynomial_features",
]
