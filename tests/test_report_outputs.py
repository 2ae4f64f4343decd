"""Tests for the paper-ready outputs of robult_jax.report: statistics, CSV, LaTeX, figures.

Every results dict is made in code; expected numbers are computed by hand in
the comments.
"""

import csv
import io
import json
import math
import os
import re

import pytest

from robult_jax import figures, metrics, report


def _run(
    method: str,
    seed: int,
    subsets: dict[str, float],
    curve: dict[str, list[float]],
    **extra,
) -> dict:
    """A one-run results dict: subset accuracies, and per-rate accuracies per mask seed."""
    random_missing = {}
    for rate, values in curve.items():
        mean, std = metrics.mean_std(values)
        random_missing[rate] = {"accuracy": {"mean": mean, "std": std, "values": values}}
    return {
        "dataset": "toy",
        "variant": "toy_v2",
        "method": method,
        "split": "test",
        "label_rate": 0.1,
        "seed": seed,
        "mask_seeds": [0, 1],
        "commit": "abc1234",
        "subsets": {name: {"accuracy": acc} for name, acc in subsets.items()},
        "random_missing": random_missing,
        **extra,
    }


def _runs() -> dict[str, list[dict]]:
    """robult: 3 seeds; semi_supervised: 2 seeds (the baseline by its name); one: 1 seed."""
    return {
        "robult": [
            _run("robult", 0, {"a": 0.6, "a+b": 0.8}, {"0": [0.8, 0.8], "1": [0.4, 0.6]}),
            _run("robult", 1, {"a": 0.7, "a+b": 0.9}, {"0": [0.9, 0.9], "1": [0.6, 0.6]}),
            _run("robult", 2, {"a": 0.8, "a+b": 1.0}, {"0": [1.0, 1.0], "1": [0.7, 0.9]}),
        ],
        "semi_supervised": [
            _run("semi_supervised", 0, {"a": 0.5, "a+b": 0.7}, {"0": [0.7, 0.7], "1": [0.3, 0.3]}),
            _run("semi_supervised", 1, {"a": 0.5, "a+b": 0.9}, {"0": [0.9, 0.9], "1": [0.3, 0.3]}),
        ],
        "one": [_run("one", 0, {"a": 0.4, "a+b": 0.6}, {"0": [0.6, 0.6], "1": [0.2, 0.4]})],
    }


# ------------------------------------------------------------ statistics


def test_seed_stats_by_hand():
    out = metrics.seed_stats([0.8, 0.9, 1.0])
    # squared deviations 0.01 + 0 + 0.01 over n - 1 = 2 -> std 0.1; t_{0.975,2} = 4.3027.
    assert math.isclose(out["mean"], 0.9) and math.isclose(out["std"], 0.1)
    assert math.isclose(out["ci95"], 4.3027 * 0.1 / math.sqrt(3))
    assert out["n"] == 3 and out["values"] == pytest.approx([0.8, 0.9, 1.0])
    two = metrics.seed_stats([0.7, 0.75])  # std = 0.05 / sqrt(2); t_{0.975,1} = 12.7062
    assert math.isclose(two["std"], 0.05 / math.sqrt(2))
    assert math.isclose(two["ci95"], 12.7062 * 0.05 / math.sqrt(2) / math.sqrt(2))
    one = metrics.seed_stats([0.5])
    assert one == {"mean": 0.5, "std": None, "ci95": None, "n": 1, "values": [0.5]}
    with pytest.raises(ValueError, match="non-empty"):
        metrics.seed_stats([])


def test_t_quantiles_match_scipy():
    assert metrics.t_quantile_975(1) == 12.7062 and metrics.t_quantile_975(30) == 2.0423
    with pytest.raises(ValueError, match="df"):
        metrics.t_quantile_975(0)
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 40), 60, 120, 1000]:
        assert math.isclose(metrics.t_quantile_975(df), stats.t.ppf(0.975, df), abs_tol=1e-4)


def test_rate_auc_by_hand():
    # Trapezoids: 0.25 * 0.85 + 0.25 * 0.75 + 0.4 * 0.6 = 0.64, over the span 0.9.
    auc = metrics.rate_auc([0.5, 0.0, 0.9, 0.25], [0.7, 0.9, 0.5, 0.8])  # unsorted on purpose
    assert math.isclose(auc, 0.64 / 0.9)
    assert metrics.rate_auc([0.1, 0.3], [0.6, 0.6]) == pytest.approx(0.6)  # flat = the value
    with pytest.raises(ValueError, match="two distinct rates"):
        metrics.rate_auc([0.5], [0.7])
    with pytest.raises(ValueError, match="shape"):
        metrics.rate_auc([0.0, 0.5], [0.7])


def test_aggregate_averages_mask_seeds_before_the_seed_spread():
    agg = report.aggregate_runs(_runs()["robult"])
    cell = agg["random_missing"]["1"]["accuracy"]
    # Per run, the mean over its 2 mask seeds: 0.5, 0.6, 0.8; then over the 3 seeds:
    # mean 0.6333, deviations -0.1333, -0.0333, 0.1667 -> sample variance 0.0233.
    assert cell["values"] == pytest.approx([0.5, 0.6, 0.8])
    assert cell["n"] == 3 and math.isclose(cell["mean"], 1.9 / 3)
    assert math.isclose(cell["std"], math.sqrt(0.07 / 3))
    assert math.isclose(cell["ci95"], 4.3027 * math.sqrt(0.07 / 3) / math.sqrt(3))
    # Pooling the 6 mask-seed values (the old behaviour) would give another spread.
    assert not math.isclose(cell["std"], metrics.seed_stats([0.4, 0.6, 0.6, 0.6, 0.7, 0.9])["std"])
    assert agg["num_runs"] == 3 and "ddof=1" in agg["spread"] and "mask seeds" in agg["spread"]
    assert agg["seed"] == [0, 1, 2] and agg["variant"] == "toy_v2"
    json.dumps(agg, allow_nan=False)  # None spreads are JSON null, no NaN


def test_aggregate_keeps_per_modality_missing_and_counts_pooled_runs():
    extra = {"per_modality_missing": {"a=0.5,b=0": {"accuracy": {"mean": 0.5, "values": [0.5]}}}}
    runs = [_run("m", s, {"a": 0.5}, {"0": [0.5]}, **extra) for s in range(2)]
    agg = report.aggregate_runs(runs)
    assert agg["per_modality_missing"]["a=0.5,b=0"]["accuracy"]["n"] == 2
    mixed = report.aggregate_runs([runs[0], _run("m", 3, {"a": 1.0}, {"0": [0.5]})])
    assert "per_modality_missing" not in mixed  # only a section every run has
    again = report.aggregate_runs([agg, report.aggregate_runs(runs[:1])])
    assert again["num_runs"] == 3 and again["subsets"]["a"]["accuracy"]["n"] == 3


def test_robustness_summary_auc_and_ratio_by_hand():
    summary = report.robustness_summary(_runs())
    assert summary["rates"] == [0.0, 1.0] and summary["baseline"] == "semi_supervised"
    # AUC over rates 0 and 1 = (acc(0) + acc(1)) / 2 per run:
    # robult (0.8 + 0.5) / 2, (0.9 + 0.6) / 2, (1.0 + 0.8) / 2 = 0.65, 0.75, 0.9.
    robult = summary["auc"]["robult"]
    assert robult["values"] == pytest.approx([0.65, 0.75, 0.9]) and robult["n"] == 3
    assert math.isclose(robult["std"], metrics.seed_stats([0.65, 0.75, 0.9])["std"])
    # semi_supervised: (0.7 + 0.3) / 2 = 0.5, (0.9 + 0.3) / 2 = 0.6 -> mean 0.55.
    assert summary["auc"]["semi_supervised"]["values"] == pytest.approx([0.5, 0.6])
    assert math.isclose(summary["ratio"]["robult"], (2.3 / 3) / 0.55)
    assert summary["ratio"]["semi_supervised"] == pytest.approx(1.0)
    assert summary["auc"]["one"]["std"] is None  # (0.6 + 0.3) / 2, one run: no spread
    assert summary["ratio"]["one"] == pytest.approx(0.45 / 0.55)
    # An explicit baseline wins; "supervised" itself is preferred when present.
    assert report.robustness_summary(_runs(), baseline="one")["ratio"]["one"] == 1.0
    both = {**_runs(), "supervised": _runs()["one"]}
    assert report.robustness_summary(both)["baseline"] == "supervised"
    with pytest.raises(ValueError, match="baseline 'nope'"):
        report.robustness_summary(_runs(), baseline="nope")
    alone = report.robustness_summary({"robult": _runs()["robult"]})
    assert alone["baseline"] is None and alone["ratio"] == {}


def test_robustness_uses_the_rates_every_method_evaluated():
    runs = _runs()
    for r in runs["robult"]:
        r["random_missing"]["0.5"] = {"accuracy": 0.0}  # a rate only robult has
    summary = report.robustness_summary(runs)
    assert summary["rates"] == [0.0, 1.0]
    assert summary["auc"]["robult"]["values"] == pytest.approx([0.65, 0.75, 0.9])
    # Alone, robult's curve has the 0.5 point: (0.8+0)/2*0.5 + (0+0.5)/2*0.5 = 0.325.
    alone = report.robustness_summary({"r": runs["robult"][:1]})["auc"]["r"]
    assert alone["mean"] == pytest.approx(0.325)


# ---------------------------------------------------------------- tables


def test_comparison_table_rows_with_robustness():
    lines = report.comparison_table(_runs(), rates=(0.0, 1.0)).splitlines()
    assert lines[0] == "| accuracy | robult | semi_supervised | one |"
    assert "| subset a | 0.700 +/- 0.100 | 0.500 +/- 0.000 | 0.400 (n=1) |" in lines
    # rate 1: robult 0.5, 0.6, 0.8 -> 0.633 +/- 0.153; semi_supervised 0.3, 0.3.
    assert "| missing rate 1 | 0.633 +/- 0.153 | 0.300 +/- 0.000 | 0.300 (n=1) |" in lines
    assert "| AUC missing rate 0-1 | 0.767 +/- 0.126 | 0.550 +/- 0.071 | 0.450 (n=1) |" in lines
    assert "| AUC ratio to semi_supervised | 1.394 | 1.000 | 0.818 |" in lines
    plain = report.comparison_table(_runs(), robustness=False)
    assert "AUC" not in plain and "| missing rate 0.5 | n/a | n/a | n/a |" in plain


def test_comparison_csv_parses_back():
    text = report.comparison_csv(_runs(), rates=(0.0, 1.0))
    rows = list(csv.DictReader(io.StringIO(text)))
    table = report.comparison_table(_runs(), rates=(0.0, 1.0)).splitlines()[2:]
    assert [r["condition"] for r in rows] == [line.split(" | ")[0][2:] for line in table]
    by = {r["condition"]: r for r in rows}
    a = by["subset a"]
    assert a["metric"] == "accuracy" and float(a["robult_mean"]) == pytest.approx(0.7)
    assert float(a["robult_std"]) == pytest.approx(0.1) and a["robult_n"] == "3"
    assert float(a["robult_ci95"]) == pytest.approx(4.3027 * 0.1 / math.sqrt(3))
    assert a["one_std"] == "" and a["one_ci95"] == "" and a["one_n"] == "1"
    assert "ddof=1" in a["spread"]
    ratio = by["AUC ratio to semi_supervised"]
    assert float(ratio["robult_mean"]) == pytest.approx((2.3 / 3) / 0.55)
    assert ratio["robult_std"] == "" and ratio["spread"] == "ratio of mean AUCs"


def _tabular_rows(tex: str) -> tuple[str, list[list[str]]]:
    spec = re.search(r"\\begin\{tabular\}\{([lc]+)\}", tex).group(1)
    body = tex.split(r"\toprule")[1].split(r"\bottomrule")[0]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    return spec, [re.split(r"(?<!\\)&", line[:-2]) for line in rows]


def test_comparison_latex_columns_and_escaping():
    runs = _runs()
    runs["robult_fused"] = runs.pop("one")
    tex = report.comparison_latex(runs, rates=(0.0, 1.0), caption="Test accuracy, 10% labels")
    spec, rows = _tabular_rows(tex)
    assert spec == "lccc" and len(rows) == 1 + 2 + 2 + 2  # header, subsets, rates, AUC
    assert all(len(r) == len(spec) for r in rows)
    assert rows[0][2].strip() == r"semi\_supervised" and rows[0][3].strip() == r"robult\_fused"
    assert r"$0.700 \pm 0.100$" in tex and r"$0.400$ (n=1)" in tex
    assert r"\caption{Test accuracy, 10\% labels}" in tex and r"\end{table}" in tex
    for line in tex.splitlines():
        if not line.startswith("%"):
            assert not re.search(r"(?<!\\)[_%#]", line), line  # every special escaped
    assert tex.count(r"\midrule") == 2  # under the header, before the robustness rows


def test_write_results_csv_tex_pdf(tmp_path):
    run = _runs()["robult"][0]
    paths = report.write_results(tmp_path, run)
    assert set(paths) == {"json", "md", "csv", "tex", "png", "pdf"}
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [r["condition"] for r in rows] == [
        "subset a", "subset a+b", "missing rate 0", "missing rate 1", "AUC missing rate 0-1",
    ]  # fmt: skip
    rate1 = rows[3]
    # One run: the mask-seed mean 0.5 and population std 0.1 of [0.4, 0.6], n = 2 masks.
    assert float(rate1["accuracy_mean"]) == pytest.approx(0.5)
    assert float(rate1["accuracy_std"]) == pytest.approx(0.1) and rate1["accuracy_n"] == "2"
    assert "population std over 2 mask seeds" in rate1["spread"]
    assert float(rows[4]["accuracy_mean"]) == pytest.approx(0.65)  # (0.8 + 0.5) / 2
    spec, tex_rows = _tabular_rows(open(paths["tex"]).read())
    assert spec == "lc" and all(len(r) == 2 for r in tex_rows) and len(tex_rows) == 6
    md = open(paths["md"]).read()
    assert "- **spread**: one training run; missing-rate rows: mean +/- population std" in md
    assert open(paths["pdf"], "rb").read(5) == b"%PDF-" and os.path.getsize(paths["pdf"]) > 1000
    agg = report.aggregate_runs(_runs()["robult"])
    report.write_results(tmp_path / "agg", agg)
    rows = {r["condition"]: r for r in csv.DictReader(open(tmp_path / "agg" / "results.csv"))}
    assert rows["missing rate 1"]["accuracy_n"] == "3"
    assert float(rows["AUC missing rate 0-1"]["accuracy_std"]) == pytest.approx(
        metrics.seed_stats([0.65, 0.75, 0.9])["std"]
    )


def test_write_comparison_files(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    paths = report.write_comparison(
        tmp_path / "cmp", _runs(), name="comparison-x", rates=(0.0, 1.0), notes="toy notes"
    )
    names = sorted(os.path.basename(p) for p in paths.values())
    assert names == sorted(os.listdir(tmp_path / "cmp"))  # no temporary file left behind
    assert names == [
        "comparison-x-subsets.pdf", "comparison-x-subsets.png", "comparison-x.csv",
        "comparison-x.json", "comparison-x.md", "comparison-x.pdf", "comparison-x.png",
        "comparison-x.tex",
    ]  # fmt: skip
    for path in paths.values():
        assert os.path.getsize(path) > 0 and os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    for key in ("pdf", "subsets_pdf"):
        assert open(paths[key], "rb").read(5) == b"%PDF-"
    record = json.load(open(paths["json"]))
    assert record["metric"] == "accuracy" and "ddof=1" in record["spread"]
    assert record["robustness"]["baseline"] == "semi_supervised"
    assert record["runs"]["robult"][2]["seed"] == 2 and record["aggregated"]["one"]["num_runs"] == 1
    row = next(r for r in record["rows"] if r["condition"] == "subset a")
    assert row["cells"]["robult"]["n"] == 3 and row["cells"]["one"]["std"] is None
    md = open(paths["md"]).read()
    assert md.startswith("# Comparison: toy (toy_v2) | label rate 0.1 | seeds 0,1,2 | test split")
    for text in ("robult 0,1,2 (n=3); semi_supervised 0,1 (n=2); one 0 (n=1)", "toy notes",
                 "mask seeds**: 0,1 per run", "trapezoid", "over semi_supervised's"):  # fmt: skip
        assert text in md
    assert md.rstrip().endswith(report.comparison_table(_runs(), rates=(0.0, 1.0)).rstrip())
    assert open(paths["csv"]).read() == report.comparison_csv(_runs(), rates=(0.0, 1.0))


# --------------------------------------------------------------- figures


def test_comparison_figures_svg_titles_captions_and_axes(tmp_path):
    figures.plot_comparison(tmp_path / "rates.svg", _runs())
    figures.plot_comparison_subsets(tmp_path / "subsets.svg", _runs())
    for name, what in (("rates.svg", "accuracy vs missing rate"),
                       ("subsets.svg", "accuracy per modality subset")):  # fmt: skip
        svg = (tmp_path / name).read_text()
        assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
        assert "toy (toy_v2) | label rate 0.1 | seeds 0,1,2 | test split" in svg
        assert "mean +/- sample std (ddof=1) over n (in the legend) training seeds" in svg
        assert "robult (n=3)" in svg and "one (n=1)" in svg and what in svg
        assert "accuracy axis: full range 0 to 1" in svg
    same_n = {"robult": _runs()["robult"]}
    figures.plot_comparison(tmp_path / "one.pdf", same_n)
    assert (tmp_path / "one.pdf").read_bytes()[:5] == b"%PDF-"
    fig = figures.comparison_figure(same_n, "accuracy", "subsets")
    assert fig.axes[0].get_ylim() == (0.0, 1.0)  # never truncated to the data
    assert "over n=3 training seeds" in fig.get_supxlabel()


def test_results_figure_title_and_axes():
    fig = figures.results_figure(_runs()["robult"][0], "accuracy")
    assert fig.get_suptitle() == "robult: toy (toy_v2) | label rate 0.1 | seed 0 | test split"
    assert "population std over 2 mask seeds" in fig.get_supxlabel()
    rates_ax, bars_ax = fig.axes
    assert rates_ax.get_ylim() == (0.0, 1.0) and bars_ax.get_xlim() == (0.0, 1.0)
    agg = report.aggregate_runs(_runs()["robult"])
    assert "seeds 0,1,2" in figures.results_figure(agg, "accuracy").get_suptitle()
    mae = figures.results_figure({**agg, "subsets": {}, "random_missing": {}}, "mae")
    assert mae.axes[0].get_ylim()[0] == 0.0 and "mae axis from 0" in mae.get_supxlabel()


def test_figures_are_byte_identical_between_writes(tmp_path):
    for d in ("a", "b"):
        report.write_results(tmp_path / d, _runs()["robult"][0])
        figures.plot_comparison(tmp_path / d / "c.svg", _runs())
    for name in ("results.pdf", "results.png", "c.svg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
