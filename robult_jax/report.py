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
Every file is written with `files.atomic_write` (readable by others, never
left half-written).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from robult_jax import figures, files, metrics
from robult_jax.files import atomic_write

SECTIONS = ("subsets", "random_missing")
# Present only when the config asks for it (eval.per_modality_rates).
OPTIONAL_SECTIONS = ("per_modality_missing",)
# Long provenance fields kept out of the Markdown header (they stay in results.json).
_JSON_ONLY = (
    "config",
    "mask_hashes",
    "data_cleaning",
    "excluded_rows",
    "software",
    "devices",
    "wall_time_s",
)
SEED_SPREAD = (
    "sample std (ddof=1) over n training seeds; ci95: half-width of the 95% t-interval "
    "of the mean; random-missing rows average each run's mask seeds first"
)
# Metrics on [0, 1] are drawn on a full 0-1 axis, so that a gap looks as large as it is.
_UNIT_METRICS = frozenset(metrics.HIGHER_IS_BETTER) - {"mae", "mse", "pearson"}
_log = logging.getLogger(__name__)


class _Row(NamedTuple):
    label: str
    cells: list  # per column: a float, a {"mean", "std", ...} dict, or None (n/a)
    spread: str = ""  # what the +/- of this row is (the CSV's last column)


# ----------------------------------------------------------------- helpers


def _to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python, recursively (json cannot encode them)."""
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _check_results(results: Mapping[str, Any]) -> None:
    for section in SECTIONS:
        if not isinstance(results.get(section), Mapping):
            raise ValueError(
                f"results[{section!r}] must be a dict of condition -> metrics; "
                f"required sections are {SECTIONS}"
            )


def _provenance(results: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in results.items() if k not in SECTIONS + OPTIONAL_SECTIONS}


def _stats(value: Any) -> tuple[float, float | None, float | None, int | None]:
    """(mean, std, ci95, n) of a float or a cell; n is None for a plain float."""
    if isinstance(value, Mapping):
        n = value.get("n", len(value.get("values", ())) or None)
        return float(value["mean"]), value.get("std"), value.get("ci95"), n
    return float(value), None, None, None


def _means_and_errors(values: Iterable[Any]) -> tuple[list[float], list[float] | None]:
    """Means, and stds as error bars (None when no value has a spread)."""
    stats = [_stats(v) for v in values]
    errors = [s[1] or 0.0 for s in stats]
    return [s[0] for s in stats], errors if any(errors) else None


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    mean, std, _, n = _stats(value)
    if std is not None:
        return f"{mean:.{digits}f} +/- {std:.{digits}f}"
    return f"{mean:.{digits}f}" + (" (n=1)" if n == 1 else "")


def _markdown(corner: str, columns: Collection[str], groups: list[list[_Row]], digits: int) -> str:
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in (r for g in groups for r in g):
        lines.append(f"| {row.label} | " + " | ".join(_cell(v, digits) for v in row.cells) + " |")
    return "\n".join(lines) + "\n"


def _number(x: float | None) -> str:
    return "" if x is None else f"{x:.10g}"


def _csv(columns: Collection[str], groups: list[list[_Row]], metric: str | None = None) -> str:
    """`condition` [, `metric`], then mean/std/ci95/n of every column, then `spread`."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    lead = ["condition"] + (["metric"] if metric else [])
    fields = ("mean", "std", "ci95", "n")
    out.writerow([*lead, *(f"{c}_{f}" for c in columns for f in fields), "spread"])
    for row in (r for g in groups for r in g):
        cells = [("",) * 4 if v is None else tuple(map(_number, _stats(v))) for v in row.cells]
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
    mean, std, _, n = _stats(value)
    if math.isnan(mean):
        return "n/a"
    if std is not None:
        return f"${mean:.{digits}f} \\pm {std:.{digits}f}$"
    return f"${mean:.{digits}f}$" + (" (n=1)" if n == 1 else "")


def _latex(
    corner: str,
    columns: Collection[str],
    groups: list[list[_Row]],
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


def _sorted_rates(section: Mapping[str, Any]) -> list[tuple[float, str]]:
    return sorted((float(k), k) for k in section)


def _at_rate(section: Mapping[str, Any], rate: float) -> Mapping[str, Any]:
    """The metrics of the rate key equal to `rate` as a float; {} if there is none."""
    for r, key in _sorted_rates(section):
        if math.isclose(r, rate, abs_tol=1e-9):
            return section[key]
    return {}


def _per_run(results: Mapping[str, Any], value: Any) -> list[float]:
    """One value per training run: an aggregate's values, else the run's mean over mask seeds."""
    if not isinstance(value, Mapping):
        return [float(value)]
    if "num_runs" in results:
        return [float(v) for v in value["values"]]
    return [float(value["mean"])]


def _flat(values: Iterable[Any]) -> list:
    out = []
    for v in values:
        out += _flat(v) if isinstance(v, list | tuple) else [v]
    return list(dict.fromkeys(x for x in out if x is not None))


# ------------------------------------------------------ seeds and robustness


def aggregate_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One results dict of `metrics.seed_stats` cells over the runs' training seeds.

    A random-missing (or per-modality) value of one run is first averaged over
    that run's mask seeds, so every row's spread is over training seeds
    only (sample std, ddof=1; None for one run). All runs must have the same
    conditions and metrics. Provenance fields equal in every run are kept;
    fields that differ (e.g. `seed`, `commit`) become the list of per-run
    values; `num_runs` (training runs pooled) and `spread` are added. An
    already-aggregated run contributes its per-seed values.
    """
    if not runs:
        raise ValueError("aggregate_runs needs at least one results dict")
    for r in runs:
        _check_results(r)
    first = runs[0]
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in runs for k in _provenance(r)):
        vals = [_to_jsonable(r.get(key)) for r in runs]
        same = len({json.dumps(v, sort_keys=True) for v in vals}) == 1
        out[key] = vals[0] if same else vals
    out["num_runs"] = sum(int(r.get("num_runs", 1)) for r in runs)
    out["spread"] = SEED_SPREAD
    optional = [s for s in OPTIONAL_SECTIONS if all(s in r for r in runs)]
    for section in (*SECTIONS, *optional):
        out[section] = {}
        for cond, cond_metrics in first[section].items():
            out[section][cond] = {}
            for metric in cond_metrics:
                pooled: list[float] = []
                for i, r in enumerate(runs):
                    try:
                        pooled += _per_run(r, r[section][cond][metric])
                    except KeyError as e:
                        raise ValueError(
                            f"run {i} lacks results[{section!r}][{cond!r}][{metric!r}]; "
                            "all runs must share conditions and metrics"
                        ) from e
                out[section][cond][metric] = metrics.seed_stats(pooled)
        for i, r in enumerate(runs):
            extra = set(r[section]) - set(first[section])
            if extra:
                raise ValueError(f"run {i} has extra {section} conditions {sorted(extra)}")
    return out


def _run_aucs(results: Mapping[str, Any], metric: str, rates: Sequence[float]) -> list[float]:
    """`metrics.rate_auc` of each training run in `results` over `rates`; [] if not defined."""
    columns = [_at_rate(results["random_missing"], r).get(metric) for r in rates]
    if len(rates) < 2 or any(c is None for c in columns):
        return []
    per_rate = [_per_run(results, c) for c in columns]
    return [metrics.rate_auc(rates, list(run)) for run in zip(*per_rate, strict=True)]


def _find_baseline(methods: Collection[str], baseline: str | None) -> str | None:
    if baseline is not None:
        if baseline not in methods:
            raise ValueError(f"baseline {baseline!r} is not one of the methods {list(methods)}")
        return baseline
    if "supervised" in methods:
        return "supervised"
    return next((m for m in methods if m.endswith("supervised")), None)


def robustness_summary(
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
    baseline: str | None = None,
) -> dict[str, Any]:
    """Area under the `metric`-vs-missing-rate curve per method, and its ratio to a baseline.

    The AUC of each training run is `metrics.rate_auc` (trapezoid divided by
    the rate span: a mean `metric`) over the rates that every run of every
    method evaluated; `auc[method]` is its `metrics.seed_stats` over seeds
    (None with fewer than two common rates). `ratio[method]` is the method's
    mean AUC over the baseline's: the method named by `baseline`, by default
    "supervised", else the first method whose name ends in "supervised"
    (None, and no ratios, without one).
    """
    runs = [r for rs in runs_by_method.values() for r in rs]
    keys = [{round(r, 9) for r, _ in _sorted_rates(run["random_missing"])} for run in runs]
    rates = sorted(set.intersection(*keys)) if keys else []
    auc = {}
    for method, method_runs in runs_by_method.items():
        per_run = [a for r in method_runs for a in _run_aucs(r, metric, rates)]
        auc[method] = metrics.seed_stats(per_run) if per_run else None
    base = _find_baseline(list(runs_by_method), baseline)
    ref = auc[base]["mean"] if base is not None and auc[base] else None
    ratio = {m: a["mean"] / ref if a and ref else None for m, a in auc.items()} if ref else {}
    return {"metric": metric, "rates": rates, "auc": auc, "baseline": base, "ratio": ratio}


def _auc_label(rates: Sequence[float]) -> str:
    return f"AUC missing rate {rates[0]:g}-{rates[-1]:g}"


def _results_table(results: Mapping[str, Any]) -> tuple[list[str], list[list[_Row]]]:
    """Columns (metrics) and rows (subsets, rates, per-modality, AUC) of one results dict."""
    aggregated = "num_runs" in results
    one = "one training run"
    masks = f"over {len(results.get('mask_seeds', ())) or 'the'} mask seeds"
    subset_spread = SEED_SPREAD.split(";")[0] if aggregated else one
    rate_spread = SEED_SPREAD.split(";")[0] if aggregated else f"{one}: population std {masks}"
    rows = [_Row(f"subset {name}", [m], subset_spread) for name, m in results["subsets"].items()]
    section = results["random_missing"]
    rows += [
        _Row(f"missing rate {k}", [section[k]], rate_spread) for _, k in _sorted_rates(section)
    ]
    rows += [
        _Row(f"missing per modality {k}", [m], rate_spread)
        for k, m in results.get("per_modality_missing", {}).items()
    ]
    # Columns: every metric of the two sections, in order of first appearance.
    columns = list(dict.fromkeys(m for s in SECTIONS for ms in results[s].values() for m in ms))
    table = [_Row(r.label, [r.cells[0].get(m) for m in columns], r.spread) for r in rows]
    rates = [r for r, _ in _sorted_rates(section)]
    auc_row = []
    for metric in columns:
        aucs = _run_aucs(results, metric, rates)
        auc_row.append(None if not aucs else metrics.seed_stats(aucs) if aggregated else aucs[0])
    robustness = []
    if any(a is not None for a in auc_row):
        robustness = [_Row(_auc_label(rates), auc_row, subset_spread + "; mean over rates")]
    return columns, [table, robustness]


def _spread(results: Mapping[str, Any]) -> str:
    """What the +/- of a results dict is (an aggregate says it in its `spread` field)."""
    if "num_runs" in results:
        return str(results.get("spread", SEED_SPREAD))
    k = len(results.get("mask_seeds", ()))
    return (
        "one training run; missing-rate rows: mean +/- population std over "
        f"{f'{k} ' if k else 'the '}mask seeds"
    )


def results_markdown(results: Mapping[str, Any], *, digits: int = 3) -> str:
    """Markdown: provenance list, then one table row per condition, and the AUC row."""
    _check_results(results)
    lines = [f"# Results: {results.get('dataset', '?')} / {results.get('method', '?')}", ""]
    for key, value in _provenance(results).items():
        if key not in _JSON_ONLY:
            text = value if isinstance(value, str) else json.dumps(_to_jsonable(value))
            lines.append(f"- **{key}**: {text}")
    if "num_runs" not in results:  # an aggregate lists its own `spread` field above
        lines.append(f"- **spread**: {_spread(results)}")
    if any(key in results for key in _JSON_ONLY):
        lines.append("- the full config and the hash of every mask are in results.json")
    columns, groups = _results_table(results)
    return "\n".join(lines) + "\n\n" + _markdown("condition", columns, groups, digits)


def results_csv(results: Mapping[str, Any]) -> str:
    """CSV: `condition`, then `<metric>_mean,_std,_ci95,_n` per metric, then `spread`."""
    _check_results(results)
    columns, groups = _results_table(results)
    return _csv(columns, groups)


def results_latex(
    results: Mapping[str, Any], *, digits: int = 3, caption: str | None = None
) -> str:
    """booktabs LaTeX of `results_markdown`'s table (a table float when `caption` is given)."""
    _check_results(results)
    columns, groups = _results_table(results)
    name = f"{results.get('dataset', '?')} / {results.get('method', '?')}"
    return _latex("condition", columns, groups, digits, [name, _spread(results)], caption)


def write_results(
    workdir: str | os.PathLike, results: Mapping[str, Any], *, metric: str = "accuracy"
) -> dict[str, str]:
    """Write `results.{json,md,csv,tex,png,pdf}` into `workdir`, each atomically.

    Replacing a `results.json` whose provenance differs (another run) is
    logged as a warning rather than done silently. Returns the paths by extension.
    """
    _check_results(results)
    results = _to_jsonable(results)
    exts = ("json", "md", "csv", "tex", "png", "pdf")
    paths = {ext: os.fspath(files.as_path(workdir) / f"results.{ext}") for ext in exts}
    if files.as_path(paths["json"]).exists():
        try:
            old = _provenance(files.read_json(paths["json"]))
        except (OSError, ValueError):
            old = None
        if old != _provenance(results):
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
    spread = SEED_SPREAD.split(";")[0]
    subsets = dict.fromkeys(s for a in aggs.values() for s in a["subsets"])
    rows = [
        _Row(f"subset {s}", [a["subsets"].get(s, {}).get(metric) for a in aggs.values()], spread)
        for s in subsets
    ]
    for rate in rates:
        cells = [_at_rate(a["random_missing"], rate).get(metric) for a in aggs.values()]
        rows.append(_Row(f"missing rate {rate:g}", cells, spread))
    groups, summary = [rows], None
    if robustness:
        summary = robustness_summary(runs_by_method, metric=metric, baseline=baseline)
    if summary and len(summary["rates"]) >= 2:
        aucs = [summary["auc"][m] for m in aggs]
        extra = [_Row(_auc_label(summary["rates"]), aucs, spread + "; AUC: mean over rates")]
        if summary["ratio"]:
            ratios = [summary["ratio"].get(m) for m in aggs]
            extra.append(_Row(f"AUC ratio to {summary['baseline']}", ratios, "ratio of mean AUCs"))
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
    return _markdown(metric, list(runs_by_method), groups, digits)


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
    return _csv(list(runs_by_method), groups, metric)


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
    comments = [figures.title(runs), f"{metric}: mean +/- {SEED_SPREAD}"]
    return _latex(metric, list(runs_by_method), groups, digits, comments, caption)


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
        f"{m} {','.join(figures.fmt(s) for s in _flat(r.get('seed') for r in rs))} "
        f"(n={a['num_runs']})"
        for (m, rs), a in zip(runs_by_method.items(), aggs.values(), strict=True)
    )
    mask_seeds = ",".join(figures.fmt(s) for s in _flat(r.get("mask_seeds") for r in runs)) or "?"
    commits = ", ".join(sorted(str(c) for c in _flat(r.get("commit") for r in runs))) or "?"
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
    return "\n".join(lines) + "\n\n" + _markdown(metric, list(aggs), groups, digits)


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
    runs_by_method = _to_jsonable(runs_by_method)
    first = next(iter(runs_by_method.values()))[0]
    metric = metric or first.get("primary_metric", "accuracy")
    kw = dict(metric=metric, rates=tuple(rates), robustness=True, baseline=baseline)
    aggs, groups, summary = _comparison(runs_by_method, **kw)
    base = os.fspath(files.as_path(workdir) / name)
    paths = {ext: f"{base}.{ext}" for ext in ("json", "md", "csv", "tex", "png", "pdf")}
    paths |= {f"subsets_{ext}": f"{base}-subsets.{ext}" for ext in ("png", "pdf")}
    record = {
        "metric": metric,
        "spread": SEED_SPREAD,
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
    atomic_write(paths["csv"], _csv(list(aggs), groups, metric).encode())
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
