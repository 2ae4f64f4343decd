"""Table formatting: rows of results cells as Markdown, CSV and LaTeX (booktabs) text.

A table is a corner label, column names and groups of `Row`s (a group is
separated by a rule in LaTeX); a cell is a float, a {"mean", "std", "ci95",
"n"} dict, or None ("n/a"). `report` builds the rows of one run's and of a
comparison's tables and writes these strings to files.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from robult_jax import aggregate


class Row(NamedTuple):
    label: str
    cells: list  # per column: a float, a {"mean", "std", ...} dict, or None (n/a)
    spread: str = ""  # what the +/- of this row is (the CSV's last column)


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    mean, std, _, n = aggregate.stats(value)
    if std is not None:
        return f"{mean:.{digits}f} +/- {std:.{digits}f}"
    return f"{mean:.{digits}f}" + (" (n=1)" if n == 1 else "")


def markdown(corner: str, columns: Collection[str], groups: list[list[Row]], digits: int) -> str:
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in (r for g in groups for r in g):
        lines.append(f"| {row.label} | " + " | ".join(_cell(v, digits) for v in row.cells) + " |")
    return "\n".join(lines) + "\n"


def _number(x: float | None) -> str:
    return "" if x is None else f"{x:.10g}"


def csv_text(columns: Collection[str], groups: list[list[Row]], metric: str | None = None) -> str:
    """`condition` [, `metric`], then mean/std/ci95/n of every column, then `spread`."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    lead = ["condition"] + (["metric"] if metric else [])
    fields = ("mean", "std", "ci95", "n")
    out.writerow([*lead, *(f"{c}_{f}" for c in columns for f in fields), "spread"])
    for row in (r for g in groups for r in g):
        cells = [
            ("",) * 4 if v is None else tuple(map(_number, aggregate.stats(v))) for v in row.cells
        ]
        label = [row.label] + ([metric] if metric else [])
        out.writerow([*label, *(x for c in cells for x in c), row.spread])
    return buf.getvalue()


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def _tex(text: Any) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def _latex_cell(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    mean, std, _, n = aggregate.stats(value)
    if math.isnan(mean):
        return "n/a"
    if std is not None:
        return f"${mean:.{digits}f} \\pm {std:.{digits}f}$"
    return f"${mean:.{digits}f}$" + (" (n=1)" if n == 1 else "")


def latex(
    corner: str,
    columns: Collection[str],
    groups: list[list[Row]],
    digits: int,
    comments: Sequence[str],
    caption: str | None,
) -> str:
    """booktabs tabular (in a table float when `caption`); `\\midrule` between groups."""
    lines = [f"% {c}" for c in comments] + [r"% needs \usepackage{booktabs}"]
    if caption is not None:
        lines += [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(caption)}}}"]
    lines += [rf"\begin{{tabular}}{{l{'c' * len(columns)}}}", r"\toprule"]
    lines += [" & ".join(_tex(c) for c in (corner, *columns)) + r" \\", r"\midrule"]
    for i, group in enumerate(g for g in groups if g):
        lines += [r"\midrule"] if i else []
        for row in group:
            cells = [_tex(row.label), *(_latex_cell(v, digits) for v in row.cells)]
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"] + ([r"\end{table}"] if caption is not None else [])
    return "\n".join(lines) + "\n"
