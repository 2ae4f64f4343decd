"""Results files: one run's and a comparison's tables (Markdown, CSV, LaTeX) and figures.

A *results* dict is JSON-able: top-level provenance fields (dataset, variant,
method, label_rate, seed, mask_seeds, commit, mask hashes, ...) plus two sections

    {"subsets":        {"acc+gyro": {"accuracy": 0.81, "macro_f1": 0.79}, ...},
     "random_missing": {"0.3":      {"accuracy": {"mean", "std", "values"}, ...}, ...}}

Keys of `random_missing` are rate strings (`f"{rate:g}"`, as `evaluate`
writes them); one run's random-missing value is the mean and population std
over its mask seeds. `aggregate_runs` turns runs of several training seeds
into one dict of the same shape whose values are `metrics.seed_stats` cells
`{"mean", "std", "ci95", "n", "values"}`: one value per training seed (a
random-missing value is first averaged over that run's mask seeds), sample
std, 95% t-interval; its `spread` field says so. Tables: `results_markdown` /
`results_csv` / `results_latex` for one results dict, `comparison_table` /
`comparison_csv` / `comparison_latex` for methods side by side, with the
robustness area under the metric-vs-missing-rate curve (`robustness_summary`).
The seed aggregation and the AUC live in `robult_jax.aggregate` (re-exported
here), the Markdown / CSV / LaTeX formatting of rows in `robult_jax.tables`.
Every file is written with `files.atomic_write` (readable by others, never
left half-written).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from robult_jax import aggregate, figures, files, metrics, tables
from robult_jax.aggregate import (  # re-exported: report.aggregate_runs, ...
    aggregate_runs,
    robustness_summary,
)
from robult_jax.files import atomic_write

# Long provenance fields kept out of the Markdown header (they stay in results.json).
_JSON_ONLY = (
    "config",
    "mask_hashes",
    "data_cleaning",
    "excluded_rows",
    "software",
    "devices",
    "wall_time_s",
    "timing_s",
)
_log = logging.getLogger(__name__)


def _auc_label(rates: Sequence[float]) -> str:
    return f"AUC missing rate {rates[0]:g}-{rates[-1]:g}"


def _results_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[tables.Row]]]:
    """Columns (metrics) and rows (subsets, rates, per-modality, AUC) of one results dict."""
    aggregated = "num_runs" in results
    one = "one training run"
    masks = f"over {len(results.get('mask_seeds', ())) or 'the'} mask seeds"
    subset_spread = aggregate.SEED_SPREAD.split(";")[0] if aggregated else one
    rate_spread = (
        aggregate.SEED_SPREAD.split(";")[0] if aggregated else f"{one}: population std {masks}"
    )
    rows = [
        tables.Row(f"subset {name}", [m], subset_spread) for name, m in results["subsets"].items()
    ]
    section = results["random_missing"]
    rows += [
        tables.Row(f"missing rate {k}", [section[k]], rate_spread)
        for _, k in aggregate.sorted_rates(section)
    ]
    rows += [
        tables.Row(f"missing per modality {k}", [m], rate_spread)
        for k, m in results.get("per_modality_missing", {}).items()
    ]
    # Columns: every metric of the two sections, in order of first appearance.
    columns = list(
        dict.fromkeys(m for s in aggregate.SECTIONS for ms in results[s].values() for m in ms)
    )
    table = [tables.Row(r.label, [r.cells[0].get(m) for m in columns], r.spread) for r in rows]
    rates = [r for r, _ in aggregate.sorted_rates(section)]
    auc_row = []
    for metric in columns:
        aucs = aggregate.run_aucs(results, metric, rates)
        auc_row.append(None if not aucs else metrics.seed_stats(aucs) if aggregated else aucs[0])
    robustness = []
    if any(a is not None for a in auc_row):
        robustness = [tables.Row(_auc_label(rates), auc_row, subset_spread + "; mean over rates")]
    return columns, [table, robustness]


def _spread(results: Mapping[str, Any]) -> str:
    """What the +/- of a results dict is (an aggregate says it in its `spread` field)."""
    if "num_runs" in results:
        return str(results.get("spread", aggregate.SEED_SPREAD))
    k = len(results.get("mask_seeds", ()))
    return (
        "one training run; missing-rate rows: mean +/- population std over "
        f"{f'{k} ' if k else 'the '}mask seeds"
    )


def results_markdown(results: Mapping[str, Any], *, digits: int = 3) -> str:
    """Markdown: provenance list, then one table row per condition, and the AUC row."""
    aggregate.check_results(results)
    lines = [f"# Results: {results.get('dataset', '?')} / {results.get('method', '?')}", ""]
    for key, value in aggregate.provenance(results).items():
        if key not in _JSON_ONLY:
            text = value if isinstance(value, str) else json.dumps(aggregate.to_jsonable(value))
            lines.append(f"- **{key}**: {text}")
    if "num_runs" not in results:  # an aggregate lists its own `spread` field above
        lines.append(f"- **spread**: {_spread(results)}")
    if any(key in results for key in _JSON_ONLY):
        lines.append("- the full config and the hash of every mask are in results.json")
    columns, groups = _results_table(results)
    return "\n".join(lines) + "\n\n" + tables.markdown("condition", columns, groups, digits)


def results_csv(results: Mapping[str, Any]) -> str:
    """CSV: `condition`, then `<metric>_mean,_std,_ci95,_n` per metric, then `spread`."""
    aggregate.check_results(results)
    columns, groups = _results_table(results)
    return tables.csv_text(columns, groups)


def results_latex(
    results: Mapping[str, Any], *, digits: int = 3, caption: str | None = None
) -> str:
    """booktabs LaTeX of `results_markdown`'s table (a table float when `caption` is given)."""
    aggregate.check_results(results)
    columns, groups = _results_table(results)
    name = f"{results.get('dataset', '?')} / {results.get('method', '?')}"
    return tables.latex("condition", columns, groups, digits, [name, _spread(results)], caption)


def write_results(
    workdir: str | os.PathLike, results: Mapping[str, Any], *, metric: str = "accuracy"
) -> dict[str, str]:
    """Write `results.{json,md,csv,tex,png,pdf}` into `workdir`, each atomically.

    Replacing a `results.json` whose provenance differs (another run) is
    logged as a warning rather than done silently. Returns the paths by extension.
    """
    aggregate.check_results(results)
    results = aggregate.to_jsonable(results)
    exts = ("json", "md", "csv", "tex", "png", "pdf")
    paths = {ext: os.fspath(files.as_path(workdir) / f"results.{ext}") for ext in exts}
    if files.as_path(paths["json"]).exists():
        try:
            old = aggregate.provenance(files.read_json(paths["json"]))
        except (OSError, ValueError):
            old = None
        if old != aggregate.provenance(results):
            _log.warning("replacing %s written by another run (provenance %s)", paths["json"], old)
    atomic_write(paths["json"], (json.dumps(results, indent=2, allow_nan=True) + "\n").encode())
    atomic_write(paths["md"], results_markdown(results).encode())
    atomic_write(paths["csv"], results_csv(results).encode())
    atomic_write(paths["tex"], results_latex(results).encode())
    fig = figures.results_figure(results, metric)
    for ext in ("png", "pdf"):
        atomic_write(paths[ext], figures.figure_bytes(fig, ext))
    return paths


# ------------------------------------------------------------- comparison


def _comparison(runs_by_method, *, metric, rates, robustness, baseline):
    """Aggregates, the table's row groups, and the robustness summary (or None)."""
    if not runs_by_method:
        raise ValueError("a comparison needs at least one method")
    aggs = {m: aggregate_runs(runs) for m, runs in runs_by_method.items()}
    spread = aggregate.SEED_SPREAD.split(";")[0]
    subsets = dict.fromkeys(s for a in aggs.values() for s in a["subsets"])
    rows = [
        tables.Row(
            f"subset {s}", [a["subsets"].get(s, {}).get(metric) for a in aggs.values()], spread
        )
        for s in subsets
    ]
    for rate in rates:
        cells = [aggregate.at_rate(a["random_missing"], rate).get(metric) for a in aggs.values()]
        rows.append(tables.Row(f"missing rate {rate:g}", cells, spread))
    groups, summary = [rows], None
    if robustness:
        summary = robustness_summary(runs_by_method, metric=metric, baseline=baseline)
    if summary and len(summary["rates"]) >= 2:
        aucs = [summary["auc"][m] for m in aggs]
        extra = [tables.Row(_auc_label(summary["rates"]), aucs, spread + "; AUC: mean over rates")]
        if summary["ratio"]:
            ratios = [summary["ratio"].get(m) for m in aggs]
            extra.append(
                tables.Row(f"AUC ratio to {summary['baseline']}", ratios, "ratio of mean AUCs")
            )
        groups.append(extra)
    return aggs, groups, summary


def comparison_table(
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
    rates: Sequence[float] = (0.0, 0.5),
    digits: int = 3,
    robustness: bool = True,
    baseline: str | None = None,
) -> str:
    """Markdown table: rows = subsets, `rates`, then the robustness AUC; columns = methods.

    Each cell is "mean +/- sample std" of `metric` over that method's training
    seeds ("mean (n=1)" for one run), "n/a" when the method lacks the
    condition. With `robustness`, `robustness_summary`'s AUC row and, when
    there is a baseline, its ratio row follow.
    """
    kw = dict(metric=metric, rates=rates, robustness=robustness, baseline=baseline)
    _, groups, _ = _comparison(runs_by_method, **kw)
    return tables.markdown(metric, list(runs_by_method), groups, digits)


def comparison_csv(
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
    rates: Sequence[float] = (0.0, 0.5),
    robustness: bool = True,
    baseline: str | None = None,
) -> str:
    """`comparison_table`'s rows as CSV: condition, metric, then `<method>_mean,_std,_ci95,_n`."""
    kw = dict(metric=metric, rates=rates, robustness=robustness, baseline=baseline)
    _, groups, _ = _comparison(runs_by_method, **kw)
    return tables.csv_text(list(runs_by_method), groups, metric)


def comparison_latex(
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
    rates: Sequence[float] = (0.0, 0.5),
    digits: int = 3,
    robustness: bool = True,
    baseline: str | None = None,
    caption: str | None = None,
) -> str:
    """`comparison_table` as a booktabs tabular ("$m \\pm s$" cells, names escaped)."""
    kw = dict(metric=metric, rates=rates, robustness=robustness, baseline=baseline)
    _, groups, _ = _comparison(runs_by_method, **kw)
    runs = [r for rs in runs_by_method.values() for r in rs]
    comments = [figures.title(runs), f"{metric}: mean +/- {aggregate.SEED_SPREAD}"]
    return tables.latex(metric, list(runs_by_method), groups, digits, comments, caption)


def comparison_markdown(
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
    rates: Sequence[float] = (0.0, 0.5),
    digits: int = 3,
    robustness: bool = True,
    baseline: str | None = None,
    notes: str = "",
) -> str:
    """`comparison_table` under a header: what was run (from the runs) and what a cell is."""
    kw = dict(metric=metric, rates=rates, robustness=robustness, baseline=baseline)
    aggs, groups, summary = _comparison(runs_by_method, **kw)
    runs = [r for rs in runs_by_method.values() for r in rs]
    seeds = "; ".join(
        f"{m} {','.join(figures.fmt(s) for s in aggregate.flat(r.get('seed') for r in rs))} "
        f"(n={a['num_runs']})"
        for (m, rs), a in zip(runs_by_method.items(), aggs.values(), strict=True)
    )
    mask_seeds = (
        ",".join(figures.fmt(s) for s in aggregate.flat(r.get("mask_seeds") for r in runs)) or "?"
    )
    commits = (
        ", ".join(sorted(str(c) for c in aggregate.flat(r.get("commit") for r in runs))) or "?"
    )
    lines = [
        f"# Comparison: {figures.title(runs)}",
        "",
        f"- **metric**: {metric}",
        f"- **training seeds**: {seeds}",
        f"- **mask seeds**: {mask_seeds} per run",
        f"- **commits**: {commits}",
        "- **cells**: mean +/- sample std (ddof=1) over the n training seeds of each method "
        '(95% t-intervals of the mean: `ci95` in the CSV and JSON); "(n=1)": one run, no '
        "spread. Subset rows: only those modalities at test time. 'missing rate p' rows: each "
        "modality of each test sample absent with probability p (at least one kept), each "
        "run's mean over its mask seeds first.",
    ]
    if summary and len(summary["rates"]) >= 2:
        rates_text = ", ".join(f"{r:g}" for r in summary["rates"])
        ratio = (
            f"; ratio: a method's mean AUC over {summary['baseline']}'s" if summary["ratio"] else ""
        )
        lines.append(
            f"- **robustness**: AUC = area under the {metric}-vs-missing-rate curve over the "
            f"rates {rates_text} (trapezoid rule) divided by the rate span, i.e. a mean "
            f"{metric} over missing rates{ratio}."
        )
    lines += [f"- {notes}"] if notes else []
    return "\n".join(lines) + "\n\n" + tables.markdown(metric, list(aggs), groups, digits)


def write_comparison(
    workdir: str | os.PathLike,
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    name: str = "comparison",
    metric: str | None = None,
    rates: Sequence[float] = (0.0, 0.5),
    digits: int = 3,
    baseline: str | None = None,
    notes: str = "",
) -> dict[str, str]:
    """Write `<name>.{json,md,csv,tex,png,pdf}` and `<name>-subsets.{png,pdf}`, atomically.

    `metric` defaults to the first run's `primary_metric` (else "accuracy");
    `notes` is one more line of the Markdown header (e.g. what a seed sets).
    The JSON holds the metric, the spread, the table rows with their cells,
    the robustness summary, each method's aggregate and every run. Returns the
    paths: keys json, md, csv, tex, png, pdf, subsets_png, subsets_pdf.
    """
    if not runs_by_method or not all(runs_by_method.values()):
        raise ValueError("write_comparison needs at least one run of every method")
    runs_by_method = aggregate.to_jsonable(runs_by_method)
    first = next(iter(runs_by_method.values()))[0]
    metric = metric or first.get("primary_metric", "accuracy")
    kw = dict(metric=metric, rates=tuple(rates), robustness=True, baseline=baseline)
    aggs, groups, summary = _comparison(runs_by_method, **kw)
    base = os.fspath(files.as_path(workdir) / name)
    paths = {ext: f"{base}.{ext}" for ext in ("json", "md", "csv", "tex", "png", "pdf")}
    paths |= {f"subsets_{ext}": f"{base}-subsets.{ext}" for ext in ("png", "pdf")}
    record = {
        "metric": metric,
        "spread": aggregate.SEED_SPREAD,
        "rates": list(rates),
        "rows": [
            {
                "condition": r.label,
                "spread": r.spread,
                "cells": dict(zip(aggs, r.cells, strict=True)),
            }
            for g in groups
            for r in g
        ],
        "robustness": summary,
        "aggregated": aggs,
        "runs": runs_by_method,
    }
    text = comparison_markdown(runs_by_method, digits=digits, notes=notes, **kw)
    atomic_write(paths["json"], (json.dumps(record, indent=1, allow_nan=True) + "\n").encode())
    atomic_write(paths["md"], text.encode())
    atomic_write(paths["csv"], tables.csv_text(list(aggs), groups, metric).encode())
    atomic_write(paths["tex"], comparison_latex(runs_by_method, digits=digits, **kw).encode())
    for what, prefix in (("rates", ""), ("subsets", "subsets_")):
        fig = figures.comparison_figure(runs_by_method, metric, what)
        for ext in ("png", "pdf"):
            atomic_write(paths[prefix + ext], figures.figure_bytes(fig, ext))
    return paths


def run(argv: list[str] | None = None) -> None:
    """`robult-jax report WORKDIR [...]`: rewrites each run's results tables and figures.

    From its results.json alone (nothing is retrained or re-evaluated): after an
    upgrade of robult_jax, or to get the CSV / LaTeX / PDF files of an older run.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="robult-jax report", description=run.__doc__.split("\n")[0]
    )
    parser.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="a training run's workdir")
    args = parser.parse_args((sys.argv if argv is None else argv)[1:])
    for workdir in args.workdirs:
        path = files.as_path(workdir) / "results.json"
        try:
            results = files.read_json(path)
            paths = write_results(
                workdir, results, metric=results.get("primary_metric", "accuracy")
            )
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            sys.exit(2)
        names = sorted(files.as_path(p).name for p in paths.values())
        print(f"{workdir}: wrote " + ", ".join(names))
