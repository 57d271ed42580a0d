"""Assembling a walk-through's ``report.md``: fixed prose, computed numbers, tables, figures.

A walk-through module writes into a ``Document`` top to bottom, the way a student reads it:
``heading``, ``text`` (prose written once, by hand), ``math`` (display equations), ``table``
and ``figure`` (both computed by the run), and ``number`` for each headline value, which also
lands in ``numbers.json`` so tests and readers can check the report against the run. The whole
folder is built by ``write_walkthrough`` inside ``zoo.report.atomic_directory``: a failing run
leaves no half-written report.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display; the same in tests and worker processes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 90
FIGURES = "figures"


def fmt(x: Any, digits: int = 4) -> str:
    """A number to ``digits`` significant figures (integers exactly); anything else as text."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x) or math.isinf(x):
            return str(x)
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
            return f"{x:.{max(1, digits - 1)}e}"
        return f"{x:.{digits}g}"
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:  # 0-d tensors and arrays
        return fmt(x.item(), digits)
    return str(x)


def md_table(rows: pd.DataFrame | Sequence[Mapping[str, Any]], digits: int = 4) -> str:
    """A GitHub-markdown table from a DataFrame or a list of row dicts (numbers via ``fmt``)."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    def cell(v: Any) -> str:  # a literal | would end the cell
        return fmt(v, digits).replace("|", "\\|")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


class Document:
    """The report being written: markdown lines, figure files and recorded numbers."""

    def __init__(self, folder: Path, title: str):
        self.folder = Path(folder)
        (self.folder / FIGURES).mkdir(exist_ok=True)
        self.title = title
        self.lines: list[str] = []
        self.numbers: dict[str, Any] = {}
        self.figures: list[str] = []
        self._section = 0

    # -- prose ----------------------------------------------------------------------------
    def heading(self, text: str, level: int = 2) -> None:
        """A numbered section (level 2) or an unnumbered subsection (level 3)."""
        if level == 2:
            self._section += 1
            text = f"{self._section}. {text}"
        self.lines += ["", "#" * level + " " + text, ""]

    def text(self, *paragraphs: str) -> None:
        """Paragraphs of fixed prose (indentation from triple-quoted strings is removed)."""
        for p in paragraphs:
            self.lines += [textwrap.dedent(p).strip(), ""]

    def math(self, *equations: str) -> None:
        """Display math, one ``$$ … $$`` block per equation (GitHub renders it)."""
        for eq in equations:
            self.lines += ["$$", textwrap.dedent(eq).strip(), "$$", ""]

    def bullets(self, items: Sequence[str]) -> None:
        self.lines += [f"- {item}" for item in items] + [""]

    def table(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]], digits: int = 4) -> None:
        self.lines += [md_table(rows, digits), ""]

    # -- computed values ------------------------------------------------------------------
    def number(self, key: str, value: Any, digits: int = 4) -> str:
        """Record ``value`` under ``key`` in numbers.json; returns it formatted for the text."""
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            value = value.item()
        self.numbers[key] = value
        return fmt(value, digits)

    def record(self, key: str, value: Any) -> Any:
        """Record ``value`` in numbers.json and return it unchanged (for tables and logic)."""
        self.number(key, value)
        return value

    def figure(self, fig, name: str, caption: str) -> str:
        """Save ``fig`` as ``figures/<name>.png`` and show it with its caption."""
        file = f"{name}.png"
        if not fig.get_constrained_layout():
            fig.tight_layout()  # titles of one row of panels must not overlap the row above
        fig.savefig(self.folder / FIGURES / file, dpi=DPI)  # tight_layout already trimmed it
        plt.close(fig)
        self.figures.append(file)
        self.lines += [f"![{name}]({FIGURES}/{file})", "", f"*Figure: {' '.join(caption.split())}*", ""]
        return file

    # -- the file ---------------------------------------------------------------------------
    def render(self, intro: str, provenance: Sequence[str]) -> str:
        head = [f"# {self.title}", "", textwrap.dedent(intro).strip(), ""]
        tail = ["", f"## {self._section + 1}. How this report was made", "",
                *[f"- {p}" for p in provenance], ""]
        return "\n".join(head + self.lines + tail).rstrip() + "\n"


def write_walkthrough(dest: Path, title: str, intro: str, build: Callable[[Document], None],
                      provenance: Callable[[], Sequence[str]]) -> Path:
    """Run ``build`` into a fresh Document inside an atomic folder, then write report.md and
    numbers.json; ``provenance()`` is called last, so it may report timings of the build."""
    from ..report import atomic_directory

    dest = Path(dest)
    with atomic_directory(dest) as tmp:
        doc = Document(tmp, title)
        build(doc)
        (tmp / "report.md").write_text(doc.render(intro, provenance()))
        (tmp / "numbers.json").write_text(json.dumps(doc.numbers, indent=1, sort_keys=True) + "\n")
    return dest
