"""Figures of results and comparisons (matplotlib, Agg backend): PNG, PDF or SVG.

Titled with dataset, variant, label rate and seeds; the value axis of
accuracy-like metrics spans exactly 0 to 1 (never truncated to make
differences look larger), and every caption says what the error bars are.
`robult_jax.report` writes them beside the tables; matplotlib (the `plot`
extra) is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from robult_jax import aggregate
from robult_jax.files import atomic_write


def _new_figure(width: float, height: float, ncols: int = 1):
    # Why Figure + FigureCanvasAgg instead of pyplot: no global backend switch,
    # no figure registry to leak, safe inside notebooks and threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def figure_bytes(fig, fmt: str) -> bytes:
    """PNG (120 dpi), PDF or SVG bytes, the same from run to run (no date inside).

    PDF fonts are embedded as TrueType (publishers refuse Type 3); SVG keeps
    text as text, so titles stay searchable and editable.
    """
    import matplotlib

    buf = io.BytesIO()
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)
    rc = {"pdf.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "robult_jax"}
    with matplotlib.rc_context(rc):
        fig.savefig(buf, format=fmt, dpi=120, metadata=metadata)
    return buf.getvalue()


def _save_figure(path: str | os.PathLike, fig) -> None:
    """Format from the extension: .pdf or .svg, anything else PNG (as before)."""
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    atomic_write(path, figure_bytes(fig, ext if ext in ("pdf", "svg") else "png"))


def fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) else str(x)


def title(runs: Sequence[Mapping[str, Any]], method: str | None = None) -> str:
    """'dataset (variant) | label rate r | seeds s | split' of the runs drawn."""
    dataset = str(runs[0].get("dataset", "?"))
    variants = [v for v in aggregate.flat(r.get("variant") for r in runs) if v != dataset]
    name = dataset + "".join(f" ({v})" for v in variants)
    parts = [f"{method}: {name}" if method else name]
    parts.append(
        "label rate " + ", ".join(fmt(x) for x in aggregate.flat(r.get("label_rate") for r in runs))
    )
    seeds = aggregate.flat(r.get("seed") for r in runs)
    parts.append(("seed " if len(seeds) == 1 else "seeds ") + ",".join(map(fmt, seeds)))
    splits = aggregate.flat(r.get("split") for r in runs)
    return " | ".join(parts + ([f"{'/'.join(splits)} split"] if splits else []))


def _error_caption(ns: Collection[int], single_run_masks: int | None = None) -> str:
    if single_run_masks is not None:
        return (
            "one training run; error bars on the missing-rate points: +/- population std "
            f"over {single_run_masks} mask seeds"
        )
    if max(ns) <= 1:
        return "n=1 training seed: no error bars"
    n = f"n={next(iter(ns))}" if len(set(ns)) == 1 else "n (in the legend)"
    return (
        f"error bars: mean +/- sample std (ddof=1) over {n} training seeds; "
        "missing-rate points average each run's mask seeds first"
    )


def _set_value_axis(set_lim, metric: str) -> str:
    """Honest limits for `metric` (0-1 for scores, 0 up for errors); returns the caption note.

    Why fixed: limits fitted to the data make a 0.01 gap fill the plot.
    """
    if metric in aggregate.UNIT_METRICS:
        set_lim(0.0, 1.0)
        return f"{metric} axis: full range 0 to 1"
    if metric == "pearson":
        set_lim(-1.0, 1.0)
        return "pearson axis: full range -1 to 1"
    if metric in ("mae", "mse"):
        set_lim(0.0, None)
        return f"{metric} axis from 0"
    return f"{metric} axis: automatic range"


def _plot_rate_curves(ax, sections: Mapping[str, Mapping[str, Any]], metric: str) -> bool:
    """One line per label of `metric` vs missing rate; False if no section has `metric`."""
    drawn = False
    for label, section in sections.items():
        points = [(r, k) for r, k in aggregate.sorted_rates(section) if metric in section[k]]
        if points:
            means, errors = aggregate.means_and_errors(section[k][metric] for _, k in points)
            xs = [r for r, _ in points]
            ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=label)
            drawn = True
    ax.set(xlabel="missing rate", ylabel=metric, title=f"{metric} vs missing rate")
    ax.grid(alpha=0.3)
    return drawn


def results_figure(results: Mapping[str, Any], metric: str):
    subsets = results["subsets"]
    fig, (ax, bar_ax) = _new_figure(11, 4.5 + 0.12 * len(subsets), ncols=2)
    label = str(results.get("method", "run"))
    if not _plot_rate_curves(ax, {label: results["random_missing"]}, metric):
        ax.text(0.5, 0.5, f"no {metric} under random missingness", ha="center", va="center")
    names = [n for n in subsets if metric in subsets[n]]
    if names:
        means, errors = aggregate.means_and_errors(subsets[n][metric] for n in names)
        bar_ax.barh(range(len(names)), means, xerr=errors, capsize=2)
        bar_ax.set_yticks(range(len(names)), names, fontsize=7)
        bar_ax.invert_yaxis()
    bar_ax.set(xlabel=metric, title="present modalities")
    bar_ax.grid(alpha=0.3, axis="x")
    note = _set_value_axis(ax.set_ylim, metric)
    _set_value_axis(bar_ax.set_xlim, metric)
    aggregated = "num_runs" in results
    masks = None if aggregated else len(results.get("mask_seeds", ())) or None
    caption = _error_caption([int(results.get("num_runs", 1))], masks)
    fig.suptitle(title([results], method=label), fontsize=10)
    fig.supxlabel(f"{caption}\n{note}", fontsize=8)
    return fig


def _legend(method: str, agg: Mapping[str, Any]) -> str:
    return f"{method} (n={agg['num_runs']})"


def comparison_figure(runs_by_method, metric: str, what: str):
    """`what` = "rates": metric vs missing rate, a line per method; "subsets": grouped bars."""
    aggs = {m: aggregate.aggregate_runs(runs) for m, runs in runs_by_method.items()}
    subsets = list(dict.fromkeys(s for a in aggs.values() for s in a["subsets"]))
    if what == "rates":
        fig, (ax,) = _new_figure(6.5, 4.8)
        sections = {_legend(m, a): a["random_missing"] for m, a in aggs.items()}
        _plot_rate_curves(ax, sections, metric)
    else:
        k, width = len(aggs), 0.8 / max(len(aggs), 1)
        fig, (ax,) = _new_figure(min(24.0, max(6.5, 1.5 + 0.22 * len(subsets) * k)), 4.8)
        for i, (method, agg) in enumerate(aggs.items()):
            present = [
                (j, agg["subsets"][s][metric])
                for j, s in enumerate(subsets)
                if metric in agg["subsets"].get(s, {})
            ]
            if not present:
                continue
            means, errors = aggregate.means_and_errors(v for _, v in present)
            xs = [j + (i - (k - 1) / 2) * width for j, _ in present]
            ax.bar(xs, means, width, yerr=errors, capsize=2, label=_legend(method, agg))
        many = len(subsets) > 6
        ax.set_xticks(
            range(len(subsets)), subsets, rotation=45 if many else 0,
            ha="right" if many else "center", fontsize=7,
        )  # fmt: skip
        ax.set(xlabel="modalities present at test time", ylabel=metric)
        ax.set_title(f"{metric} per modality subset")
        ax.grid(alpha=0.3, axis="y")
    note = _set_value_axis(ax.set_ylim, metric)
    ax.legend(fontsize=8)
    runs = [r for rs in runs_by_method.values() for r in rs]
    fig.suptitle(title(runs), fontsize=9)
    caption = _error_caption([a["num_runs"] for a in aggs.values()])
    fig.supxlabel(f"{caption}\n{note}", fontsize=7)
    return fig


def plot_comparison(
    path: str | os.PathLike,
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
) -> None:
    """`metric` vs missing rate, one line per method (mean +/- sample std over seeds).

    The format follows the extension of `path`: .pdf, .svg, else PNG.
    """
    _save_figure(path, comparison_figure(runs_by_method, metric, "rates"))


def plot_comparison_subsets(
    path: str | os.PathLike,
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
) -> None:
    """Grouped bars: modality subsets on x, one bar per method (format as `plot_comparison`)."""
    _save_figure(path, comparison_figure(runs_by_method, metric, "subsets"))


# ------------------------------------------------------------- single run
