"""Errors and warnings a user can act on.

``ZooError`` is bad input (a recipe key, a model name, a data array): the CLI prints its one-line
message and exits with status 2. ``ConvergenceWarning`` marks a fit that ran but should not be
trusted as it stands (ELBO still falling, R-hat high, divergences); it is never swallowed.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class ZooError(ValueError):
    """Bad input: the message names the file, key or value and what is allowed."""


class NotPositiveDefiniteError(ZooError):
    """The Hessian at the mode is not positive definite (Laplace cannot be used as it stands)."""


class ConvergenceWarning(UserWarning):
    """A fit finished but did not converge by the zoo's checks."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> ZooError:
    """The standard 'unknown X' error: the bad name, a close match, and what is allowed."""
    choices = sorted(choices)
    return ZooError(
        f"unknown {kind} {name!r}{did_you_mean(name, choices)}; allowed: {', '.join(choices)}"
    )
