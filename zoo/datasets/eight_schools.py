"""The eight schools data (Rubin 1981), shipped with the zoo."""

from __future__ import annotations

import torch

from ..registry import register_dataset

# Estimated coaching effects on SAT-V scores and their standard errors, one per school.
EFFECTS = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
STANDARD_ERRORS = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


@register_dataset(
    source=(
        "Rubin (1981), Estimation in parallel randomized experiments, J. Educ. Stat. 6(4); "
        "Gelman et al. (2013), Bayesian Data Analysis, 3rd ed., table 5.2; "
        "identical to posteriordb's eight_schools data"
    )
)
def eight_schools() -> dict:
    """Coaching effects in eight schools: estimates y[j] with known standard errors sigma[j].

    J = 8; y = (28, 8, -3, 7, -1, 1, 18, 12); sigma = (15, 10, 16, 11, 9, 11, 10, 18).
    """
    return {
        "J": len(EFFECTS),
        "y": torch.tensor(EFFECTS, dtype=torch.float64),
        "sigma": torch.tensor(STANDARD_ERRORS, dtype=torch.float64),
    }
