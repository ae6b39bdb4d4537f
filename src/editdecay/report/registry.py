"""The report's registry, lm-eval-harness style: every table, comparison and plot is one entry.

Adding a table is one decorated function in ``tables.py`` (it gets the :class:`~editdecay.report.data.ReportData`
and returns :class:`Table` objects); a comparison is one :class:`ComparisonSpec` in ``comparisons.py``;
a plot is one decorated function in ``plots.py`` that draws on a matplotlib figure. ``build.py``
runs every registered entry in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

TABLES: dict[str, Callable] = {}
PLOTS: dict[str, Callable] = {}
COMPARISONS: dict[str, "ComparisonSpec"] = {}


@dataclass
class Table:
    """One paper-style table: ``wide`` for tables.md/html, ``long`` rows for tables.csv."""

    name: str
    title: str
    note: str  # how the cells were computed (the CI method, n)
    wide: pd.DataFrame
    long: pd.DataFrame


@dataclass(frozen=True)
class ComparisonSpec:
    """Two sides compared within each seed, everything else held fixed. ``kind`` says what is compared:

    - ``flips``: values of one setting axis (``axis``: layers, editor, ft) on the same edits (1 = flipped);
    - ``ds``: two model groups (``axis`` ``group``: base, ftonly, ft) on the same DS test rows (1 = correct);
    - ``native``: edits that survive KE→FT vs native facts retained by the same run (two samples).
    """

    name: str
    axis: str
    pairs: tuple[tuple[str, str], ...]
    description: str
    same_records: bool = True  # flips: both sides must have edited the same records (same stage key)
    skip_values: tuple[str, ...] = field(default=())  # values of other axes that make no comparison (ft 'none')
    kind: str = "flips"


def register_table(name: str):
    def deco(fn: Callable) -> Callable:
        TABLES[name] = fn
        return fn

    return deco


def register_plot(name: str):
    def deco(fn: Callable) -> Callable:
        PLOTS[name] = fn
        return fn

    return deco


def register_comparison(spec: ComparisonSpec) -> ComparisonSpec:
    COMPARISONS[spec.name] = spec
    return spec
