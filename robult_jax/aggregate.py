"""Results dicts across runs: accessors, seed aggregation and the robustness AUC.

The results dict (robult_jax/report.py's docstring) has two required sections,
`subsets` and `random_missing`, and the optional `per_modality_missing`; a
value is a float (one run) or a cell {"mean", "std", ...}. Here:
  - accessors shared by the tables (robult_jax/tables.py, report.py) and the
    figures (figures.py): `stats`, `means_and_errors`, `sorted_rates`,
    `at_rate`, `flat`;
  - `aggregate_runs`: runs of several training seeds as one results dict of
    `metrics.seed_stats` cells;
  - `robustness_summary`: the area under the metric-vs-missing-rate curve per
    method, and its ratio to a baseline.
`report` re-exports `aggregate_runs` and `robustness_summary`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from robult_jax import metrics

SECTIONS = ("subsets", "random_missing")
# Present only when the config asks for it (eval.per_modality_rates).
OPTIONAL_SECTIONS = ("per_modality_missing",)
SEED_SPREAD = (
    "sample std (ddof=1) over n training seeds; ci95: half-width of the 95% t-interval "
    "of the mean; random-missing rows average each run's mask seeds first"
)
# Metrics on [0, 1] are drawn on a full 0-1 axis, so that a gap looks as large as it is.
UNIT_METRICS = frozenset(metrics.HIGHER_IS_BETTER) - {"mae", "mse", "pearson"}


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python, recursively (json cannot encode them)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def check_results(results: Mapping[str, Any]) -> None:
    for section in SECTIONS:
        if not isinstance(results.get(section), Mapping):
            raise ValueError(
                f"results[{section!r}] must be a dict of condition -> metrics; "
                f"required sections are {SECTIONS}"
            )


def provenance(results: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in results.items() if k not in SECTIONS + OPTIONAL_SECTIONS}


def stats(value: Any) -> tuple[float, float | None, float | None, int | None]:
    """(mean, std, ci95, n) of a float or a cell; n is None for a plain float."""
    if isinstance(value, Mapping):
        n = value.get("n", len(value.get("values", ())) or None)
        return float(value["mean"]), value.get("std"), value.get("ci95"), n
    return float(value), None, None, None


def means_and_errors(values: Iterable[Any]) -> tuple[list[float], list[float] | None]:
    """Means, and stds as error bars (None when no value has a spread)."""
    cells = [stats(v) for v in values]
    errors = [c[1] or 0.0 for c in cells]
    return [c[0] for c in cells], errors if any(errors) else None


def sorted_rates(section: Mapping[str, Any]) -> list[tuple[float, str]]:
    return sorted((float(k), k) for k in section)


def at_rate(section: Mapping[str, Any], rate: float) -> Mapping[str, Any]:
    """The metrics of the rate key equal to `rate` as a float; {} if there is none."""
    for r, key in sorted_rates(section):
        if math.isclose(r, rate, abs_tol=1e-9):
            return section[key]
    return {}


def per_run(results: Mapping[str, Any], value: Any) -> list[float]:
    """One value per training run: an aggregate's values, else the run's mean over mask seeds."""
    if not isinstance(value, Mapping):
        return [float(value)]
    if "num_runs" in results:
        return [float(v) for v in value["values"]]
    return [float(value["mean"])]


def flat(values: Iterable[Any]) -> list:
    out = []
    for v in values:
        out += flat(v) if isinstance(v, list | tuple) else [v]
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
        check_results(r)
    first = runs[0]
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in runs for k in provenance(r)):
        vals = [to_jsonable(r.get(key)) for r in runs]
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
                        pooled += per_run(r, r[section][cond][metric])
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


def run_aucs(results: Mapping[str, Any], metric: str, rates: Sequence[float]) -> list[float]:
    """`metrics.rate_auc` of each training run in `results` over `rates`; [] if not defined."""
    columns = [at_rate(results["random_missing"], r).get(metric) for r in rates]
    if len(rates) < 2 or any(c is None for c in columns):
        return []
    per_rate = [per_run(results, c) for c in columns]
    return [metrics.rate_auc(rates, list(run)) for run in zip(*per_rate, strict=True)]


def find_baseline(methods: Collection[str], baseline: str | None) -> str | None:
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
    keys = [{round(r, 9) for r, _ in sorted_rates(run["random_missing"])} for run in runs]
    rates = sorted(set.intersection(*keys)) if keys else []
    auc = {}
    for method, method_runs in runs_by_method.items():
        aucs = [a for r in method_runs for a in run_aucs(r, metric, rates)]
        auc[method] = metrics.seed_stats(aucs) if aucs else None
    base = find_baseline(list(runs_by_method), baseline)
    ref = auc[base]["mean"] if base is not None and auc[base] else None
    ratio = {m: a["mean"] / ref if a and ref else None for m, a in auc.items()} if ref else {}
    return {"metric": metric, "rates": rates, "auc": auc, "baseline": base, "ratio": ratio}
