"""Where reference data live: ``../shared/data/<name>`` beside the checkout, unless told."""

from __future__ import annotations

import os
from pathlib import Path


def shared_folder(name: str, root: str | os.PathLike | None, env_var: str) -> Path:
    """``root``, else ``$env_var``, else ``../shared/data/<name>`` from the working directory
    (or, failing that, from the checkout this package lives in, so scripts run from a
    sub-folder still find it)."""
    if root is not None:
        return Path(root)
    env = os.environ.get(env_var)
    if env:  # an explicitly set variable wins over the default
        return Path(env)
    default = Path("..") / "shared" / "data" / name
    beside_checkout = (Path(__file__).resolve().parents[2] / default).resolve()
    if not default.is_dir() and beside_checkout.is_dir():
        return beside_checkout
    return default


def entries(base: Path, marker: str) -> list[str]:
    """Sorted names of the sub-folders of ``base`` that hold a file ``marker``."""
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / marker).is_file())
