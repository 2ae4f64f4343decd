"""Results files: one run's JSON/Markdown/PNG, seed aggregation, method comparison.

A *results* dict is JSON-able: top-level provenance fields (dataset, variant,
method, label_rate, seeds, commit, mask hashes, ...) plus two sections

    {"subsets":        {"acc+gyro": {"accuracy": 0.81, "macro_f1": 0.79}, ...},
     "random_missing": {"0.3":      {"accuracy": 0.77, ...}, ...}}

where a metric value is a float (one run) or `{"mean", "std", "values"}`
(aggregated over seeds by `aggregate_runs`). Keys of `random_missing` are rate
strings (`f"{rate:g}"`, as `evaluate` writes them). Every file is written with
`atomic_write`, so a crash never leaves a truncated results file behind.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import logging
import math
import os
import subprocess
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from robult_jax.files import atomic_write
from robult_jax.metrics import mean_std

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
_log = logging.getLogger(__name__)


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


def _mean_std_of(value: Any) -> tuple[float, float | None]:
    if isinstance(value, Mapping):
        return float(value["mean"]), float(value["std"])
    return float(value), None


def _means_and_errors(values: Iterable[Any]) -> tuple[list[float], list[float] | None]:
    """Means, and stds as error bars (None when no value has a spread)."""
    pairs = [_mean_std_of(v) for v in values]
    errors = [s or 0.0 for _, s in pairs]
    return [m for m, _ in pairs], errors if any(errors) else None


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "n/a"
    mean, std = _mean_std_of(value)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} +/- {std:.{digits}f}"


def _table(corner: str, columns: Collection[str], rows: list[tuple[str, list]], digits: int) -> str:
    """Markdown table; each row is (label, one metric value or None per column)."""
    lines = [f"| {corner} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, values in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(v, digits) for v in values) + " |")
    return "\n".join(lines) + "\n"


def _sorted_rates(section: Mapping[str, Any]) -> list[tuple[float, str]]:
    return sorted((float(k), k) for k in section)


def _new_figure(width: float, height: float, ncols: int = 1):
    # Why Figure + FigureCanvasAgg instead of pyplot: no global backend switch,
    # no figure registry to leak, safe inside notebooks and threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def _plot_rate_curves(ax, sections: Mapping[str, Mapping[str, Any]], metric: str) -> bool:
    """One line per label of `metric` vs missing rate; False if no section has `metric`."""
    drawn = False
    for label, section in sections.items():
        points = [(r, k) for r, k in _sorted_rates(section) if metric in section[k]]
        if points:
            means, errors = _means_and_errors(section[k][metric] for _, k in points)
            xs = [r for r, _ in points]
            ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=label)
            drawn = True
    ax.set(xlabel="missing rate", ylabel=metric, title=f"{metric} vs missing rate")
    ax.grid(alpha=0.3)
    return drawn


# ------------------------------------------------------------- single run


def results_markdown(results: Mapping[str, Any], *, digits: int = 3) -> str:
    """Markdown: provenance list, then one table row per subset and per missing rate."""
    _check_results(results)
    lines = [f"# Results: {results.get('dataset', '?')} / {results.get('method', '?')}", ""]
    for key, value in _provenance(results).items():
        if key not in _JSON_ONLY:
            text = value if isinstance(value, str) else json.dumps(_to_jsonable(value))
            lines.append(f"- **{key}**: {text}")
    if any(key in results for key in _JSON_ONLY):
        lines.append("- the full config and the hash of every mask are in results.json")
    conditions = [(f"subset {name}", m) for name, m in results["subsets"].items()]
    conditions += [
        (f"missing rate {k}", results["random_missing"][k])
        for _, k in _sorted_rates(results["random_missing"])
    ]
    conditions += [
        (f"missing per modality {k}", m) for k, m in results.get("per_modality_missing", {}).items()
    ]
    # Columns: every metric of the two sections, in order of first appearance.
    metrics = dict.fromkeys(m for s in SECTIONS for ms in results[s].values() for m in ms)
    rows = [(label, [values.get(m) for m in metrics]) for label, values in conditions]
    return "\n".join(lines) + "\n\n" + _table("condition", metrics, rows, digits)


def _plot_results_png(results: Mapping[str, Any], metric: str) -> bytes:
    subsets = results["subsets"]
    fig, (ax, bar_ax) = _new_figure(11, 4 + 0.12 * len(subsets), ncols=2)
    label = str(results.get("method", "run"))
    if not _plot_rate_curves(ax, {label: results["random_missing"]}, metric):
        ax.text(0.5, 0.5, f"no {metric} under random missingness", ha="center", va="center")
    names = [n for n in subsets if metric in subsets[n]]
    if names:
        means, errors = _means_and_errors(subsets[n][metric] for n in names)
        bar_ax.barh(range(len(names)), means, xerr=errors)
        bar_ax.set_yticks(range(len(names)), names, fontsize=7)
        bar_ax.invert_yaxis()
    bar_ax.set(xlabel=metric, title="present modalities")
    return _png_bytes(fig)


def write_results(
    workdir: str | os.PathLike, results: Mapping[str, Any], *, metric: str = "accuracy"
) -> dict[str, str]:
    """Write `results.json`, `results.md` and `results.png` into `workdir`, atomically.

    Replacing a `results.json` whose provenance differs (another run) is
    logged as a warning rather than done silently. Returns the three paths.
    """
    _check_results(results)
    results = _to_jsonable(results)
    paths = {ext: os.path.join(workdir, f"results.{ext}") for ext in ("json", "md", "png")}
    if os.path.exists(paths["json"]):
        try:
            with open(paths["json"]) as f:
                old = _provenance(json.load(f))
        except (OSError, ValueError):
            old = None
        if old != _provenance(results):
            _log.warning("replacing %s written by another run (provenance %s)", paths["json"], old)
    atomic_write(paths["json"], (json.dumps(results, indent=2, allow_nan=True) + "\n").encode())
    atomic_write(paths["md"], results_markdown(results).encode())
    atomic_write(paths["png"], _plot_results_png(results, metric))
    return paths


# ------------------------------------------------------ seeds and methods


def aggregate_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean +/- population std (`metrics.mean_std`) over runs, for every metric.

    All runs must have the same conditions and metrics. Provenance fields equal
    in every run are kept; fields that differ (e.g. `seed`, `commit`) become the
    list of per-run values; `num_runs` is added. An already-aggregated run
    contributes its per-seed values, so aggregating aggregates pools seeds
    instead of averaging means.
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
    out["num_runs"] = len(runs)
    for section in SECTIONS:
        out[section] = {}
        for cond, metrics in first[section].items():
            out[section][cond] = {}
            for metric in metrics:
                pooled: list[float] = []
                for i, r in enumerate(runs):
                    try:
                        value = r[section][cond][metric]
                        pooled += value["values"] if isinstance(value, Mapping) else [value]
                    except KeyError as e:
                        raise ValueError(
                            f"run {i} lacks results[{section!r}][{cond!r}][{metric!r}]; "
                            "all runs must share conditions and metrics"
                        ) from e
                pooled = [float(v) for v in pooled]
                mean, std = mean_std(pooled)
                out[section][cond][metric] = {"mean": mean, "std": std, "values": pooled}
        for i, r in enumerate(runs):
            extra = set(r[section]) - set(first[section])
            if extra:
                raise ValueError(f"run {i} has extra {section} conditions {sorted(extra)}")
    return out


def _at_rate(section: Mapping[str, Any], rate: float) -> Mapping[str, Any]:
    """The metrics of the rate key equal to `rate` as a float; {} if there is none."""
    for r, key in _sorted_rates(section):
        if math.isclose(r, rate, abs_tol=1e-9):
            return section[key]
    return {}


def comparison_table(
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
    rates: Sequence[float] = (0.0, 0.5),
    digits: int = 3,
) -> str:
    """Markdown table: rows = subsets then `rates`, columns = methods.

    Each cell is "mean +/- std" of `metric` over that method's runs, "n/a" when
    the method lacks the condition.
    """
    agg = [aggregate_runs(runs) for runs in runs_by_method.values()]
    subsets = dict.fromkeys(s for a in agg for s in a["subsets"])
    rows = [(f"subset {s}", [a["subsets"].get(s, {}).get(metric) for a in agg]) for s in subsets]
    for rate in rates:
        cells = [_at_rate(a["random_missing"], rate).get(metric) for a in agg]
        rows.append((f"missing rate {rate:g}", cells))
    return _table(metric, runs_by_method, rows, digits)


def plot_comparison(
    path: str | os.PathLike,
    runs_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "accuracy",
) -> None:
    """PNG of `metric` vs missing rate: one line per method, error bars = std over runs."""
    fig, (ax,) = _new_figure(6, 4)
    sections = {m: aggregate_runs(runs)["random_missing"] for m, runs in runs_by_method.items()}
    _plot_rate_curves(ax, sections, metric)
    ax.legend()
    atomic_write(path, _png_bytes(fig))


def software_versions() -> dict[str, str]:
    """Versions of robult_jax and of the libraries a result depends on ("unknown" if absent)."""
    out = {}
    for name in ("robult_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "unknown"  # e.g. robult_jax run from a clone, not installed
    return out


def git_commit(path: str | os.PathLike | None = None) -> str:
    """Short HEAD hash of the repository holding `path` (default: this package).

    Adds "+dirty" when tracked files have uncommitted changes (untracked files,
    such as run outputs, do not count); "unknown" outside git or without git.
    """
    cwd = os.fspath(path) if path is not None else os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", cwd, *args], capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
